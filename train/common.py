"""Helpers shared by the stages: model configs from presets, data sources, previews."""

from __future__ import annotations

from typing import Any

import torch
from einops import rearrange

from vidm.errors import ConfigError, VidmError


def build_model_config(kind: str, section: dict[str, Any], src: str):
    """The model config for `kind`: preset `section["preset"]` with the other keys overriding it.
    Unknown keys / wrong types are one-line ConfigErrors naming the config file."""
    from vidm import stages

    config_class = stages.get(kind).config_class()
    preset = section.get("preset", "tiny")
    if preset is None:  # the config class's own defaults
        d = config_class().to_dict()
    elif not isinstance(preset, str):
        raise ConfigError(f"{src}: model.preset must be a preset name or null, got {preset!r}")
    else:
        from vidm.models.presets import get_preset

        try:
            d = get_preset(kind, preset).to_dict()
        except VidmError as e:
            raise ConfigError(f"{src}: model.preset: {e}") from None
    overrides = {k: v for k, v in section.items() if k != "preset"}
    d.update(overrides)
    try:
        return config_class.from_dict(d)
    except VidmError as e:
        raise ConfigError(f"{src}: model: {e}") from None


def device_generator(generator: torch.Generator, device) -> torch.Generator:
    """A generator on `device` seeded from `generator` (for APIs that draw on the tensor's device)."""
    device = torch.device(device)
    if device.type == generator.device.type:
        return generator
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return torch.Generator(device=device).manual_seed(seed)


def load_autoencoder(path: str, device) -> "torch.nn.Module":
    from vidm.models.autoencoder import AutoencoderKL

    ae = AutoencoderKL.from_pretrained(path).to(device).eval().requires_grad_(False)
    return ae


def seeded_video_item(folder, index: int, seed: int) -> dict:
    """VideoFolder item whose random clip (start, stride, flip) comes from `seed`, not from the
    folder's epoch, so a step's data is a pure function of (run seed, step)."""
    folder.seed = int(seed) & 0xFFFFFFFF
    folder.set_epoch(0)
    return folder[index]


class VideoItems(torch.utils.data.Dataset):
    """Keys (index, item_seed) -> VideoFolder items (optionally with the video's first frame)."""

    def __init__(self, folder, with_first_frame: bool = False):
        self.folder = folder
        self.with_first_frame = with_first_frame

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, key) -> dict:
        index, seed = key
        item = seeded_video_item(self.folder, index, seed)
        out = {"video": item["video"]}  # (T, 3, H, W) in [-1, 1]
        T = item["video"].shape[0]
        out["times"] = item["stride"] * torch.arange(T, dtype=torch.float32)  # window-relative
        if self.with_first_frame:
            if item["start"] == 0:
                first = item["video"][0]
            else:  # the VIDM anchor is the video's first frame, wherever the window starts
                from vidm.data.dataset import frames_to_tensor
                from vidm.video import read_clip

                frames = read_clip(item["path"], 0, 1, 1, self.folder.size)
                if item.get("flip"):
                    frames = frames[:, :, ::-1]
                first = frames_to_tensor(frames)[0]
            out["first_frame"] = first  # (3, H, W)
        return out


def subset_folder(folder, ids: list[int]):
    """A shallow copy of a VideoFolder restricted to videos `ids`."""
    import copy

    sub = copy.copy(folder)
    sub.videos = [folder.videos[i] for i in ids]
    sub._bad = set()
    return sub


def open_video_folder(cfg, num_frames: int, src: str):
    from vidm.data.dataset import VideoFolder

    if not cfg.data.root:
        raise ConfigError(f"{src}: data.root (a folder of videos) is not set")
    folder = VideoFolder(cfg.data.root, num_frames=num_frames, stride=cfg.data.stride,
                         size=cfg.data.size, flip=cfg.data.flip, seed=cfg.run.seed)
    n = len(folder)
    val = max(0, min(cfg.data.val_clips, n - 1))
    train = subset_folder(folder, list(range(n - val)))
    held = subset_folder(folder, list(range(n - val, n))) if val else None
    return train, held


@torch.no_grad()
def encode(ae, frames: torch.Tensor, accelerator) -> torch.Tensor:
    """Scaled posterior-mean latents of frames (N, 3, H, W) with the frozen autoencoder."""
    with accelerator.autocast():
        z = ae.encode(frames).mean
    return (z.float() * ae.config.latent_scale).detach()


@torch.no_grad()
def decode(ae, z: torch.Tensor) -> torch.Tensor:
    """Scaled latents (N, C, h, w) -> frames in [0, 1] (N, 3, H, W)."""
    x = ae.decode(z.float() / ae.config.latent_scale).float().clamp(-1, 1)
    return (x + 1) / 2


def latents_as_images(z: torch.Tensor) -> torch.Tensor:
    """Without an autoencoder: the first 3 latent channels, each rescaled to [0, 1]."""
    z = z[:, :3].float()
    if z.shape[1] < 3:
        z = torch.cat([z, z[:, :1].expand(-1, 3 - z.shape[1], -1, -1)], 1)
    lo = z.amin(dim=(0, 2, 3), keepdim=True)
    hi = z.amax(dim=(0, 2, 3), keepdim=True)
    return (z - lo) / (hi - lo).clamp(min=1e-6)


def image_row(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) -> (3, H, N*W)."""
    return rearrange(images, "n c h w -> c h (n w)")


def check_latent_shape(net_cfg, latent_shape, src: str) -> None:
    C, h, w = latent_shape
    if net_cfg.in_channels != C:
        raise ConfigError(f"{src}: model.in_channels={net_cfg.in_channels} but the latents have {C} channels")
    f = net_cfg.downsample_factor
    if h % f or w % f:
        raise ConfigError(f"{src}: latent size {h}x{w} is not divisible by the UNet's downsample factor {f} "
                          f"(change data.size or model.ch_mult)")
