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


# Runs the installed entry point's module as ``inspectd ARGS`` would, then names the listed modules it loaded.
LOADED_BY_COMMAND = """
import runpy, sys
sys.argv = ['inspectd', *{argv!r}]
try:
    runpy.run_module('inspectd.cli', run_name='__main__')
except SystemExit as exc:
    code = exc.code
print('loaded:', sorted(m for m in {modules!r} if m in sys.modules))
sys.exit(code)
"""
# What a reader given --db does without: the ORM and its classes, the settings and their libraries.
ORM_AND_SETTINGS = ("sqlalchemy.orm", "inspectd.store.schema", "pydantic", "yaml", "inspectd.config")


def _small_store(url: str) -> None:
    """One inspection with an alert and a review: every reader query returns a row."""
    from sqlalchemy import insert

    from inspectd.store import tables
    from inspectd.store.clock import utcnow
    from inspectd.store.database import migrate, open_engine
    from inspectd.store.reviews import add_review

    engine = open_engine(url)
    migrate(engine)
    now = utcnow()
    with engine.begin() as connection:
        connection.execute(insert(tables.inspections).values(
            id=1, created_at=now, camera="line1", source_path="/drop/part-1.png", sha256="0" * 64, size_bytes=1,
            verdict="anomalous", score=0.9, threshold=0.5, reasoning="a crack"))
        connection.execute(insert(tables.alerts).values(
            inspection_id=1, rule="defect", channel="hook", camera="line1", idempotency_key="k1", payload={},
            status="failed", next_attempt_at=now, created_at=now))
    add_review(engine, 1, "defect", None, "ann")
    engine.dispose()


def _loaded_by(argv: list[str], modules: tuple[str, ...]) -> str:
    code = LOADED_BY_COMMAND.format(argv=argv, modules=modules)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, (argv, done.stderr)
    assert "line1" in done.stdout, (argv, done.stdout)  # the row was read and printed
    return done.stdout.rstrip().splitlines()[-1]


def test_reader_commands_given_a_store_url_load_neither_the_orm_nor_the_settings(tmp_path):
    """With --db, history, stats and alerts read the store through SQLAlchemy Core (``store/tables.py``) and read no
    config: the ORM, pydantic and PyYAML (~0.15 s of start-up, ``benchmarks/cli_startup.py``) stay unloaded. Checked
    by what is imported, not by timing, which a shared machine makes noisy."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    _small_store(url)
    for command in (["history"], ["stats"], ["alerts"], ["history", "--format", "json"]):
        assert _loaded_by([*command, "--db", url], ORM_AND_SETTINGS) == "loaded: []", command


def test_reader_commands_given_a_config_validate_it_and_still_skip_the_orm(tmp_path):
    """Without --db the store comes from the config, which is validated as every command validates it (pydantic);
    the store is still read without the ORM."""
    from tests.daemon_harness import write_config

    config = write_config(tmp_path, REPO / "models" / "tiny-cgro")
    _small_store(f"sqlite:///{tmp_path / 'var' / 'inspectd.db'}")
    for command in (["history"], ["stats"], ["alerts"]):
        loaded = _loaded_by(["--config", str(config), *command], ORM_AND_SETTINGS)
        assert loaded == "loaded: ['inspectd.config', 'pydantic', 'yaml']", command

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
