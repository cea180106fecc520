"Test-session setup shared by every test module."
import os
import torch

# Without a GPU the Triton kernels run in Triton's interpreter, which Triton reads when it is first imported;
# pat.models (timm) imports triton, so this has to happen before any test module is collected.
if not torch.cuda.is_available(): os.environ.setdefault("TRITON_INTERPRET", "1")
