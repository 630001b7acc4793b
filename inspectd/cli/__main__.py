import sys

from inspectd.cli.main import main

sys.exit(main())
