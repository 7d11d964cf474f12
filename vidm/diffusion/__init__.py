"""Diffusion machinery in EDM form (Karras et al. 2022): preconditioning, loss, samplers,
guidance and the RaMViD/VIDIM training masks. Four separate pieces: the backbone never sees
sigma algebra (`Denoiser`), the loss only calls a denoiser, samplers only call denoise(x, sigma).

Training (motion model; content model is the same without known/times/anchor):

    denoiser = Denoiser(motion_net, sigma_data=0.5)
    m = sample_training_masks(B, T, generator, MaskConfig())      # known (B, T), anchor_mask (B,)
    loss = edm_loss(denoiser, x0, m.known, generator,             # x0 (B, T, C, H, W)
                    times=times, anchor=anchor, anchor_mask=m.anchor_mask)
    # scalar: mean over samples of the per-element mean over each sample's unknown frames;
    # reduction="none" gives (B,). Frames dropped by conditioning dropout are unknown, so they
    # are noised and supervised (an unconditional sample).

Sampling (infilling / prediction with guidance on the input frames):

    sigmas = get_sigmas_karras(18, 0.002, 80.0, dtype=torch.float32)
    video = sample_window(denoiser, x_known, known, sigmas, "heun", generator, guidance=w,
                          cond=dict(times=..., anchor=...))    # known frames come back bit-exact
    # = initial_state + guided_infill_denoiser + the sampler with known_frame_noise(generator, known)
    # (vidm.diffusion.sampling: the one path of the pipeline, the previews and the evaluations)
    video = sample_window_dual(denoiser, backward_denoiser, x_known, known, sigmas, "heun", generator,
                               guidance=w, cond=..., backward_anchor=z_end)
    # dual-directional (vidm.diffusion.bidirectional): a forward and a time-reversed backward
    # estimate fused at every step (Generative Inbetweening; the same denoiser twice = TRF)

Content model with class guidance: cfg_denoiser(lambda x, s: denoiser(x, s, class_labels=y),
lambda x, s: denoiser(x, s, class_labels=null_labels), w).
"""

from vidm.diffusion.bidirectional import dual_direction_denoiser, leading_known, reverse_times
from vidm.diffusion.denoiser import Denoiser, edm_precond
from vidm.diffusion.guidance import (
    cfg_denoiser,
    dropped_known_denoiser,
    guided_infill_denoiser,
    initial_state,
    known_frame_denoiser,
    noise_mask_for,
    per_frame_sigma,
)
from vidm.diffusion.loss import edm_loss, edm_weight, sample_sigma
from vidm.diffusion.noise import NoiseSource, known_frame_noise, randn_like_from
from vidm.diffusion.masks import (
    MODES,
    MaskConfig,
    TrainingMasks,
    apply_conditioning_dropout,
    sample_known_mask,
    sample_training_masks,
)
from vidm.diffusion.samplers import (
    SAMPLERS,
    get_ancestral_step,
    get_sampler,
    get_sigmas_karras,
    num_evaluations,
    register,
    sample_dpmpp_2m,
    sample_euler,
    sample_euler_ancestral,
    sample_heun,
)
from vidm.diffusion.sampling import reinjected_steps, run_sampler, sample_frames, sample_window, sample_window_dual

__all__ = [
    "Denoiser", "edm_precond", "edm_loss", "edm_weight", "sample_sigma",
    "cfg_denoiser", "known_frame_denoiser", "dropped_known_denoiser", "guided_infill_denoiser",
    "initial_state", "noise_mask_for", "per_frame_sigma",
    "MODES", "MaskConfig", "TrainingMasks", "sample_known_mask", "apply_conditioning_dropout",
    "sample_training_masks",
    "SAMPLERS", "register", "get_sampler", "get_sigmas_karras", "get_ancestral_step", "num_evaluations",
    "sample_euler", "sample_heun", "sample_dpmpp_2m", "sample_euler_ancestral",
    "NoiseSource", "known_frame_noise", "randn_like_from", "run_sampler", "sample_frames", "sample_window",
    "sample_window_dual", "reinjected_steps", "dual_direction_denoiser", "leading_known", "reverse_times",
]
