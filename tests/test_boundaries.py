"""The daemon and inspect run without training or export code (or their extras)."""

import subprocess
import sys

from tests.conftest import REPO

BLOCKER = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.startswith(('inspectd.training', 'inspectd.export')):
            raise ImportError('blocked for this test: ' + name)
sys.meta_path.insert(0, Block())
"""


def test_inspect_and_daemon_modules_never_import_training_or_export():
    code = BLOCKER + (
        "import inspectd.daemon.service, inspectd.cli.history, inspectd.doctor, inspectd.evaluation.runner\n"
        "from inspectd.cli.main import main\n"
        "code = main(['inspect', 'samples/sample-3-defect-spot.png', '--device', 'cpu'])\n"
        "loaded = sorted(m for m in ('trl', 'peft', 'datasets') if m in sys.modules)\n"
        "print('training libraries loaded:', loaded)\n"
        "sys.exit(code)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert "sample-3-defect-spot.png" in done.stdout
    assert "training libraries loaded: []" in done.stdout


def test_the_daemons_main_process_modules_import_neither_torch_nor_transformers():
    """The model runs in its own process; the daemon's main process (watch, queue, store, alerts, reload) and the
    reader commands load without torch or transformers (hundreds of MB and seconds at every start)."""
    code = (
        "import sys\n"
        "import inspectd.daemon.service, inspectd.cli.main, inspectd.cli.history, inspectd.real.evidence\n"
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", done.stdout


def test_reader_commands_load_no_image_array_or_migration_libraries(tmp_path):
    """history, stats and alerts are what engineers type all day: they run on SQLAlchemy and the settings alone
    (numpy, Pillow, alembic and the model code cost ~0.3 s of start-up; benchmarks/cli_startup.py times them)."""
    from inspectd.store.database import migrate, open_engine

    url = f"sqlite:///{tmp_path / 'store.db'}"
    migrate(open_engine(url))
    heavy = ("numpy", "PIL", "alembic", "mako", "torch", "transformers", "scipy", "uvicorn", "starlette")
    for command in (["history"], ["stats"], ["alerts"], ["history", "--format", "json"]):
        code = (
            "import sys\n"
            "from inspectd.cli.main import main\n"
            f"code = main([*{command!r}, '--db', {url!r}])\n"
            f"print('loaded:', sorted(m for m in {heavy!r} if m in sys.modules))\n"
            "sys.exit(code)\n"
        )
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
        assert done.returncode == 0, done.stderr
        assert "loaded: []" in done.stdout, (command, done.stdout)


def test_training_settings_and_recipes_are_read_without_torch():
    """The settings live beside the trainers (cgro_config.py, warmup_config.py, tiny_spec.py), as trl keeps
    grpo_config.py beside grpo_trainer.py: a recipe or a training YAML is read and validated, and the stages that
    need torch import it themselves."""
    code = (
        "import sys\n"
        "import inspectd.training.cli, inspectd.training.recipe, inspectd.training.memory_plan\n"
        "from inspectd.training.recipe import load_recipe\n"
        "recipe = load_recipe('models/recipes/tiny-cgro.yaml')\n"
        "print(recipe.name, sorted(m for m in ('torch', 'transformers', 'trl', 'peft') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "tiny-cgro []", done.stdout
