"help() tells a user of the installed package each loss's and model's parameters, defaults and meanings."
import pydoc
from pat.losses import LOSSES, SegLoss
from pat.models import MODEL_NAMES, build_model


def test_build_model_help_lists_parameters_and_options():
    text = pydoc.render_doc(build_model, renderer=pydoc.plaintext)
    assert "num_classes: output channels, >= 2" in text and "seed = None: seeds the weights' initialisation" in text
    assert "segnet: width=1.0" in text and "dlv3p: encoder='resnet101', encoder_weights=None" in text
    assert all(f"  {n}: " in text for n in MODEL_NAMES)


def test_help_lists_every_losss_parameters():
    "help() on an installed loss shows each parameter's default and meaning (the source's comments), not nn.Module's __init__ doc."
    for cls in (*LOSSES.values(), SegLoss):
        text = pydoc.render_doc(cls, renderer=pydoc.plaintext)
        assert "Initialize internal Module state" not in text, cls
        assert "ignore_index = 255: the label of pixels left out" in text, cls
    text = pydoc.render_doc(LOSSES["pat"], renderer=pydoc.plaintext)
    assert "T = 20.0: the temperature, > 0" in text and "normalize = 'mask'" in text and "$S_i^y$: the number of valid pixels" in text
