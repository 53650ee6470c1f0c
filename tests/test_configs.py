"The shipped YAML configs use only arguments that our constructors accept."
import inspect
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs/opensora/inference").glob("*.yaml"))
TRAIN_CONFIGS = sorted((ROOT / "configs/opensora/train").glob("*.yaml"))
PLAN_TRAIN_CONFIGS = sorted(p for p in (ROOT / "configs/opensora_plan/train").glob("*.yaml") if not p.name.startswith("causalvae"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_keys_are_real_arguments(path):
    from opensora_nb.models.stdit import STDiT
    from opensora_nb.diffusion.iddpm import IDDPM
    from opensora_nb.models.t5 import T5Embedder
    from opensora_nb.models.sd_vae import VideoAutoencoderKL
    from opensora_nb.runtime import get_dtype
    cfg = yaml.safe_load(path.read_text())
    for section, cls, extra in [("model", STDiT, {"from_pretrained"}), ("scheduler", IDDPM, set()),
                                ("text_encoder", T5Embedder, set()), ("vae", VideoAutoencoderKL, set())]:
        args = set(inspect.signature(cls.__init__).parameters) | extra | {"type"}
        unknown = set(cfg[section]) - args
        assert not unknown, f"{path.name}: {section} keys {sorted(unknown)} are not arguments of {cls.__name__}"
    get_dtype(cfg["dtype"])
    assert IDDPM(**{k: v for k, v in cfg["scheduler"].items() if k != "type"}).num_timesteps == 100


def test_configs_exist():
    assert len(CONFIGS) >= 2


@pytest.mark.parametrize("path", TRAIN_CONFIGS, ids=lambda p: p.name)
def test_train_configs_are_training_keys(path):
    "Every key of an Open-Sora training config is a training key (a typo would be refused the same way)."
    from opensora_nb.commands import train_settings
    cfg = train_settings(["--config", str(path)])
    assert cfg.model_type == "STDiT-XL/2" and cfg.num_frames == 16


def test_plan_train_configs_are_train_t2v_flags():
    from opensora_nb.commands import PLAN_TRAIN_FLAGS, plan_train_keys
    from opensora_nb.train import train_config
    assert PLAN_TRAIN_CONFIGS, "no configs/opensora_plan/train/*.yaml"
    for path in PLAN_TRAIN_CONFIGS:
        keys = yaml.safe_load(path.read_text())
        assert set(keys) <= set(PLAN_TRAIN_FLAGS), sorted(set(keys) - set(PLAN_TRAIN_FLAGS))
        cfg = train_config(plan_train_keys(keys))
        assert cfg.model_type == "LatteT2V-XL/122" and cfg.vae_type == "causalvae"
