"""Configuration mistakes are refused at start, naming file, key and value."""

from pathlib import Path

import pytest

from inspectd.config import default_config_path, load_settings
from inspectd.errors import ConfigError
from inspectd.real.params import RealParams

REPO = Path(__file__).resolve().parent.parent


def _write(tmp_path, text):
    path = tmp_path / "inspectd.yaml"
    path.write_text(text)
    (tmp_path / "bundle").mkdir(exist_ok=True)
    return path


def test_shipped_default_config_is_valid():
    settings = load_settings(default_config_path())
    assert settings.model.bundle.is_dir()
    assert settings.model.device == "auto"


def test_example_plant_config_names_a_shipped_bundle(tmp_path):
    """Installed as README's "Running as a service" says (the clone at /opt/inspectd), the example's bundle exists."""
    text = (REPO / "config" / "example-plant.yaml").read_text()
    settings = load_settings(REPO / "config" / "example-plant.yaml", require_paths=False)
    bundle = Path(str(settings.model.bundle).replace("/opt/inspectd", str(REPO), 1))
    assert (bundle / "bundle.json").is_file(), text
    assert settings.model.device == "cuda:0" and len(settings.watch.folders) == 2


def test_relative_bundle_path_resolves_against_the_config_file(tmp_path):
    settings = load_settings(_write(tmp_path, "model:\n  bundle: bundle\n"))
    assert settings.model.bundle == tmp_path / "bundle"


def test_unknown_key_is_refused_with_its_path(tmp_path):
    path = _write(tmp_path, "model:\n  bundle: bundle\n  batchsize: 4\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    message = str(info.value)
    assert str(path) in message and "model.batchsize: unknown key" in message


def test_wrong_type_names_key_and_value(tmp_path):
    path = _write(tmp_path, "model:\n  bundle: bundle\n  batch_size: many\n")
    with pytest.raises(ConfigError, match=r"model\.batch_size: .*'many'"):
        load_settings(path)
    path = _write(tmp_path, "model:\n  bundle: bundle\n  device: gpu0\n")
    with pytest.raises(ConfigError, match=r"model\.device: .*cuda:N"):
        load_settings(path)


def test_missing_bundle_folder_and_missing_section(tmp_path):
    path = _write(tmp_path, "model:\n  bundle: nowhere\n")
    with pytest.raises(ConfigError, match=r"model\.bundle: folder .*nowhere does not exist"):
        load_settings(path)
    path = _write(tmp_path, "images:\n  max_pixels: 10\n")
    with pytest.raises(ConfigError, match="model: required key is missing"):
        load_settings(path)


def test_bad_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "absent.yaml")
    path = _write(tmp_path, "model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(path)
    path = _write(tmp_path, "- just a list\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_settings(path)


def test_real_overrides_replace_only_what_is_set(tmp_path):
    path = _write(tmp_path, "model:\n  bundle: bundle\nreal:\n  mask_threshold: 0.7\n  alpha: 1.0\n")
    settings = load_settings(path)
    merged = settings.real.apply(RealParams(layer_start=0))
    assert merged.mask_threshold == 0.7 and merged.alpha == 1.0 and merged.layer_start == 0
    path = _write(tmp_path, "model:\n  bundle: bundle\nreal:\n  mask_treshold: 0.7\n")
    with pytest.raises(ConfigError, match=r"real\.mask_treshold: unknown key"):
        load_settings(path)


def test_model_threads_default_to_one_and_are_checked(tmp_path):
    from inspectd.config import ModelSettings

    assert ModelSettings(bundle=tmp_path).threads == 1
    with pytest.raises(ValueError, match="threads"):
        ModelSettings(bundle=tmp_path, threads=0)


def test_shipped_recipes_and_training_configs_validate():
    from inspectd.training.recipe import load_recipe

    recipes = REPO / "models" / "recipes"
    assert load_recipe(recipes / "tiny-cgro.yaml").data.kind == "synthetic"
    assert load_recipe(recipes / "magnetic-tile-cgro.yaml").data.kind == "labelled_folder"
    for card in ("24gb", "48gb", "80gb"):  # recipes too: the 7B starts from the downloaded checkpoint, no warm-up
        seven_b = load_recipe(recipes / f"qwen2.5-vl-7b-cgro-{card}.yaml")
        assert (seven_b.cgro.batch_size, seven_b.cgro.generations, seven_b.data.image_size) == (16, 8, 420)
        assert not seven_b.warms_up and not seven_b.cgro.use_cpu and seven_b.device == "cuda:0"


def test_reader_commands_find_the_service_config_before_the_shipped_default(tmp_path, monkeypatch):
    import inspectd.config as config

    service = tmp_path / "etc-inspectd.yaml"
    monkeypatch.setattr(config, "SERVICE_CONFIG", service)
    monkeypatch.delenv("INSPECTD_CONFIG", raising=False)
    assert config.config_path(None) == default_config_path(), "no service config: the shipped one"
    service.write_text("model: {bundle: x}\n")
    assert config.config_path(None) == service
    monkeypatch.setenv("INSPECTD_CONFIG", str(tmp_path / "env.yaml"))
    assert config.config_path(None) == tmp_path / "env.yaml"
    assert config.config_path("given.yaml") == Path("given.yaml")
