"""Training entry points: `python -m train.autoencoder|content|motion --config ...` (also under
`accelerate launch -m` and `torchrun -m`). The shared loop is train/loop.py."""
