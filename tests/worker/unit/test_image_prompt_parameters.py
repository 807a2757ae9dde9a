"""The parameters text of a job with IP-Adapters (one key per entry: model with its hash,
image encoder, weight) and with its background removed (model and hash)."""

from diffleet_worker.parameters import parameters_text
from tests.worker.unit.test_parameters import order, ref, settings_line

ENCODER = ref("clip-vision", "image-encoder", "e" * 64, family=None)


def test_each_ip_adapter_has_its_key_with_model_encoder_and_weight() -> None:
    adapters = [ref("ip-plain", "ip-adapter", "a" * 64), ref("ip-style", "ip-adapter", "b" * 64)]
    entries = [
        {"model": "ip-plain", "image": "s3://uploads/a.png"},
        {"model": "ip-style", "image": "s3://uploads/b.png", "scale": 1.25},
    ]
    line = settings_line(
        parameters_text(
            order({"ipAdapters": entries}, ip_adapters=adapters, image_encoder=ENCODER),
            seed=1,
            strength=None,
        )
    )
    assert (
        'IP-Adapter 0: "Model: ip-plain [aaaaaaaaaa], Image encoder: clip-vision, Weight: 0.6", '
        'IP-Adapter 1: "Model: ip-style [bbbbbbbbbb], Image encoder: clip-vision, Weight: 1.25"'
    ) in line


def test_a_removed_background_names_its_model_after_the_postprocessing() -> None:
    remover = ref("cut-out", "background-remover", "c" * 64, family=None)
    spec = {"removeBackground": {"model": "cut-out"}, "output": {"format": "webp"}}
    line = settings_line(
        parameters_text(order(spec, background_remover=remover), seed=1, strength=None)
    )
    assert line.endswith("Background removal: cut-out, Background removal hash: cccccccccc")
