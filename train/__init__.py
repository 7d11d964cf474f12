"""Training entry points: `python -m train.autoencoder|content|motion --config ...` (also under
`accelerate launch -m` and `torchrun -m`). The shared loop is train/loop.py.

Installed as `vidm.train` (`python -m vidm.train.motion ...`, `vidm train motion ...` work
anywhere); `python -m train.<stage>` runs these same files from a checkout's root. Imports
inside this package are relative so that both names work (README "Layout")."""
