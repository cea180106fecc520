"help(build_model) tells a user of the installed package the parameters and each model's options."
import pydoc
from pat.models import MODEL_NAMES, build_model


def test_build_model_help_lists_parameters_and_options():
    text = pydoc.render_doc(build_model, renderer=pydoc.plaintext)
    assert "num_classes: output channels, >= 2" in text and "seed = None: seeds the weights' initialisation" in text
    assert "segnet: width=1.0" in text and "dlv3p: encoder='resnet101', encoder_weights=None" in text
    assert all(f"  {n}: " in text for n in MODEL_NAMES)
