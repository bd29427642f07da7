"""Timestep settings carried across noise schedules by noise level (issue 19).

The methods' published settings name DDIM indices or training timesteps of Stable Diffusion
1.x (KSCU's key-step starts, MiM-MU's timestep range, KSCU's leakage weight). An index or a
timestep means a different amount of noise on another schedule (ToyWorld's zero-terminal-SNR
cosine, SD 2.x), so each setting is stored as the noise level it has on SD 1.x's schedule,
the log signal-to-noise ratio ``log_snr = log(alphabar / (1 - alphabar))`` (nats; +inf is
clean, -inf pure noise), and mapped to a model's schedule by the nearest log-SNR. SD 1.x's
schedule is the scaled-linear one (betas 0.00085 to 0.012, 1000 training steps) whose DDIM
grid uses "leading" spacing with offset 1 (50 steps: t = 981, 961, ..., 1); a model with
that schedule maps every setting to itself exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

#: SD 1.x's scaled-linear schedule: first and last beta, training steps
SD1_BETAS = (0.00085, 0.012)
SD1_TRAIN_STEPS = 1000


def sd1_alphas_cumprod() -> torch.Tensor:
    """alphabar_t of SD 1.x, (1000,) float32, computed as diffusers' scheduler does."""
    b0, b1 = SD1_BETAS
    betas = torch.linspace(b0**0.5, b1**0.5, SD1_TRAIN_STEPS, dtype=torch.float32) ** 2
    return torch.cumprod(1.0 - betas, dim=0)


def log_snr(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """log(alphabar / (1 - alphabar)) per timestep, float64, same shape (-inf where
    alphabar = 0, the last step of a zero-terminal-SNR schedule)."""
    ab = alphas_cumprod.detach().double().cpu()
    return torch.log(ab) - torch.log1p(-ab)


def sd1_ddim_timesteps(steps: int) -> list[int]:
    """SD 1.x's DDIM grid: training timestep of each index 0..steps-1 (0 is the noisiest)."""
    stride = SD1_TRAIN_STEPS // steps
    return [(steps - 1 - i) * stride + 1 for i in range(steps)]


def _nearest(levels: torch.Tensor, target: float, prefer_last: bool) -> int:
    """Index of ``levels`` (float64) nearest to ``target``; ties go to the last index when
    ``prefer_last`` (the noisier timestep), else the first (the noisier DDIM index)."""
    gap = torch.where(levels == target, 0.0, (levels - target).abs())  # -inf == -inf
    hits = torch.nonzero(gap == gap.min()).flatten()
    return int(hits[-1] if prefer_last else hits[0])


@dataclass(frozen=True)
class NoiseLevel:
    """A noise level, stored as its log-SNR (nats)."""

    log_snr: float

    @classmethod
    def from_sd1_timestep(cls, t: int) -> NoiseLevel:
        """The noise level of SD 1.x training timestep ``t`` (0..999)."""
        if not 0 <= t < SD1_TRAIN_STEPS:
            raise ValueError(f"an SD 1.x timestep is in [0, {SD1_TRAIN_STEPS}) (got {t})")
        return cls(float(log_snr(sd1_alphas_cumprod())[t]))

    @classmethod
    def from_sd1_ddim_index(cls, index: int, steps: int = 50) -> NoiseLevel:
        """The noise level of DDIM index ``index`` on SD 1.x's ``steps``-step grid."""
        return cls.from_sd1_timestep(sd1_ddim_timesteps(steps)[index])

    def timestep(self, alphas_cumprod: torch.Tensor) -> int:
        """The model's training timestep (0..T-1) with the nearest log-SNR."""
        return _nearest(log_snr(alphas_cumprod), self.log_snr, prefer_last=True)

    def ddim_index(self, timesteps: list[int], alphas_cumprod: torch.Tensor) -> int:
        """The index on a model's DDIM grid (``timesteps``, noisiest first) whose timestep
        has the nearest log-SNR."""
        levels = log_snr(alphas_cumprod)[torch.tensor(timesteps)]
        return _nearest(levels, self.log_snr, prefer_last=False)

    def sd1_timestep(self) -> int:
        """SD 1.x's training timestep at this noise level (the inverse of
        :meth:`from_sd1_timestep` on SD 1.x's own levels)."""
        return self.timestep(sd1_alphas_cumprod())

    def sd1_ddim_index(self, steps: int = 50) -> int:
        """SD 1.x's DDIM index on its ``steps``-step grid at this noise level."""
        return self.ddim_index(sd1_ddim_timesteps(steps), sd1_alphas_cumprod())


def map_sd1_range(t_min: int, t_max: int, alphas_cumprod: torch.Tensor) -> tuple[int, int]:
    """An inclusive range of SD 1.x training timesteps mapped to a model's: each bound by
    noise level, except that SD 1.x's ends (0 and 999) map to the model's ends (0 and T-1),
    whatever their log-SNR, so the full range stays the model's full range (a
    zero-terminal-SNR model's last step has log-SNR -inf, which SD 1.x never reaches)."""
    if not 0 <= t_min <= t_max < SD1_TRAIN_STEPS:
        raise ValueError(f"need 0 <= t_min <= t_max < {SD1_TRAIN_STEPS} (got {t_min}, {t_max})")
    last = len(alphas_cumprod) - 1
    lo = 0 if t_min == 0 else NoiseLevel.from_sd1_timestep(t_min).timestep(alphas_cumprod)
    hi = (
        last
        if t_max == SD1_TRAIN_STEPS - 1
        else NoiseLevel.from_sd1_timestep(t_max).timestep(alphas_cumprod)
    )
    return lo, hi


def model_level(t: int, alphas_cumprod: torch.Tensor) -> NoiseLevel:
    """The noise level of a model's training timestep ``t`` (log-SNR may be -inf)."""
    return NoiseLevel(float(log_snr(alphas_cumprod)[t]))
