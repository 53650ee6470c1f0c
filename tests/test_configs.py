"The shipped YAML configs use only arguments that our constructors accept."
import inspect
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))


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
