"""Which champion/challenger pair runs (``selection``), the rule a promotion passes (``rule``), and asking the
daemon for a promotion or rollback (``requests``). Read by the daemon, the CLI and the console; imports no
torch."""
