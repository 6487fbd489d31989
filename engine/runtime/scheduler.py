"""Schedulers of the regeneration loop, on numpy arrays (the loop itself: :mod:`..semgir.pipeline`).

- :class:`DpmSolverPP`: DPM-Solver++ (2M, multistep) in numpy, the torch-free twin of diffusers'
  ``DPMSolverMultistepScheduler(algorithm_type="dpmsolver++")`` with its default settings
  (solver_order=2, midpoint solver, lower_order_final, final_sigmas_type="zero", no Karras sigmas).
  The default few-step sampler on every backend, so backends agree and torch is not needed.
- :class:`DiffusersScheduler`: any other diffusers scheduler (LCM, DDIM, PNDM, Euler) behind the same
  numpy interface; needs torch and diffusers.

Both follow one interface, used by a plain loop::

    s = make_scheduler("dpm++", cfg); s.set_timesteps(4)
    latents = noise * s.init_noise_sigma
    for i, t in enumerate(s.timesteps):
        eps = unet(s.scale_model_input(latents, i), t, cond)
        latents = s.step(eps, i, latents, seeds)
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from ..errors import MissingDependencyError, UnknownNameError

#: every sampler the regeneration loop offers; "auto" picks LCM when LCM weights are loaded, else DPM-Solver++
SCHEDULERS = ("dpm++", "lcm", "ddim", "pndm", "euler")


class DpmSolverPP:
    """Epsilon-prediction DPM-Solver++ 2M (matches diffusers within float32 rounding)."""

    def __init__(self, num_train_timesteps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012,
                 beta_schedule: str = "scaled_linear", timestep_spacing: str = "linspace", steps_offset: int = 0,
                 prediction_type: str = "epsilon", lower_order_final: bool = True):
        if prediction_type != "epsilon":
            raise ValueError(f"prediction_type {prediction_type!r} is not supported (epsilon only)")
        if beta_schedule == "scaled_linear":
            betas = np.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=np.float32) ** 2
        elif beta_schedule == "linear":
            betas = np.linspace(beta_start, beta_end, num_train_timesteps, dtype=np.float32)
        else:
            raise ValueError(f"beta_schedule {beta_schedule!r} is not supported")
        self.num_train_timesteps = num_train_timesteps
        self.timestep_spacing, self.steps_offset = timestep_spacing, steps_offset
        self.lower_order_final = lower_order_final
        self.alphas_cumprod = np.cumprod(1.0 - betas.astype(np.float32), dtype=np.float32)
        self.init_noise_sigma = 1.0
        self.timesteps = np.zeros(0, np.int64)
        self.sigmas = np.zeros(0, np.float32)

    @classmethod
    def from_config(cls, cfg: Mapping) -> "DpmSolverPP":
        keys = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "timestep_spacing",
                "steps_offset", "prediction_type", "lower_order_final")
        return cls(**{k: cfg[k] for k in keys if k in cfg})

    def set_timesteps(self, steps: int) -> None:
        n = self.num_train_timesteps
        if self.timestep_spacing == "linspace":
            ts = np.linspace(0, n - 1, steps + 1).round()[::-1][:-1].copy().astype(np.int64)
        elif self.timestep_spacing == "leading":
            ratio = n // (steps + 1)
            ts = (np.arange(0, steps + 1) * ratio).round()[::-1][:-1].copy().astype(np.int64) + self.steps_offset
        elif self.timestep_spacing == "trailing":
            ts = np.arange(n, 0, -n / steps).round().copy().astype(np.int64) - 1
        else:
            raise ValueError(f"timestep_spacing {self.timestep_spacing!r} is not supported")
        sig = ((1 - self.alphas_cumprod) / self.alphas_cumprod) ** 0.5
        sig = np.interp(ts, np.arange(0, len(sig)), sig)
        self.sigmas = np.concatenate([sig, [0.0]]).astype(np.float32)  # final sigma: zero
        self.timesteps = ts
        self._outputs: list[np.ndarray] = []
        self._index = 0

    @staticmethod
    def _alpha_sigma(sigma: float) -> tuple[float, float]:
        alpha = 1.0 / (sigma**2 + 1.0) ** 0.5
        return alpha, sigma * alpha

    @staticmethod
    def _lambda(alpha: float, sigma: float) -> float:
        return np.inf if sigma == 0 else float(np.log(alpha) - np.log(sigma))

    def scale_model_input(self, sample: np.ndarray, i: int) -> np.ndarray:
        return sample

    def step(self, eps: np.ndarray, i: int, sample: np.ndarray, seeds: Sequence[int] = ()) -> np.ndarray:
        """One update from ``timesteps[i]`` to ``timesteps[i+1]`` (call in order)."""
        if i != self._index:
            raise ValueError(f"DPM-Solver++ steps must run in order (expected step {self._index}, got {i})")
        s0 = float(self.sigmas[i])
        a_s0, sg_s0 = self._alpha_sigma(s0)
        x0 = (sample.astype(np.float32) - sg_s0 * eps) / a_s0  # data prediction (epsilon model)
        self._outputs = (self._outputs + [x0])[-2:]
        a_t, sg_t = self._alpha_sigma(float(self.sigmas[i + 1]))
        lam_t, lam_s0 = self._lambda(a_t, sg_t), self._lambda(a_s0, sg_s0)
        h = lam_t - lam_s0
        last = i == len(self.timesteps) - 1
        first_order = len(self._outputs) < 2 or (last and (self.lower_order_final or self.sigmas[i + 1] == 0))
        em1 = -1.0 if np.isinf(h) else float(np.expm1(-h))  # exp(-h) - 1
        if first_order:
            x = (sg_t / sg_s0) * sample - (a_t * em1) * x0
        else:
            a_s1, sg_s1 = self._alpha_sigma(float(self.sigmas[i - 1]))
            h0 = lam_s0 - self._lambda(a_s1, sg_s1)
            r0 = h0 / h
            m0, m1 = self._outputs[-1], self._outputs[-2]
            d0, d1 = m0, (1.0 / r0) * (m0 - m1)
            x = (sg_t / sg_s0) * sample - (a_t * em1) * d0 - 0.5 * (a_t * em1) * d1
        self._index += 1
        return x.astype(np.float32)


class DiffusersScheduler:
    """A diffusers scheduler behind the numpy interface of :class:`DpmSolverPP` (needs torch)."""

    def __init__(self, name: str, cfg: Mapping):
        try:
            import diffusers
            import torch
        except ImportError as exc:
            raise MissingDependencyError("diffusers", "torch", f"the {name!r} scheduler (only dpm++ is torch-free)") \
                from exc
        self.torch = torch
        cls = {"lcm": diffusers.LCMScheduler, "ddim": diffusers.DDIMScheduler, "pndm": diffusers.PNDMScheduler,
               "euler": diffusers.EulerDiscreteScheduler, "dpm++": diffusers.DPMSolverMultistepScheduler}[name]
        extra = {"algorithm_type": "dpmsolver++", "use_karras_sigmas": False} if name == "dpm++" else {}
        self.name, self.s = name, cls.from_config(dict(cfg), **extra)
        self.timesteps = np.zeros(0, np.int64)

    @property
    def init_noise_sigma(self) -> float:
        return float(self.s.init_noise_sigma)

    def set_timesteps(self, steps: int) -> None:
        self.s.set_timesteps(steps)
        self.timesteps = self.s.timesteps.numpy()

    def scale_model_input(self, sample: np.ndarray, i: int) -> np.ndarray:
        t = self.s.timesteps[i]
        return self.s.scale_model_input(self.torch.from_numpy(np.ascontiguousarray(sample)), t).numpy()

    def step(self, eps: np.ndarray, i: int, sample: np.ndarray, seeds: Sequence[int] = ()) -> np.ndarray:
        torch = self.torch
        kw = {}
        if self.name == "lcm":  # LCM re-noises between steps: per-image generators keep batching irrelevant
            kw["generator"] = [torch.Generator().manual_seed(int(s)) for s in seeds]
        out = self.s.step(torch.from_numpy(np.ascontiguousarray(eps)), self.s.timesteps[i],
                          torch.from_numpy(np.ascontiguousarray(sample)), **kw).prev_sample
        return out.numpy().astype(np.float32)


def make_scheduler(name: str, base_config: Mapping):
    """The scheduler ``name`` from a diffusers scheduler config. Few-step samplers start from the last
    training timestep ("trailing", as diffusers recommends); PNDM (the paper's 50 steps) keeps the
    config's own spacing."""
    if name not in SCHEDULERS:
        raise UnknownNameError("scheduler", name, SCHEDULERS)
    cfg = {k: v for k, v in dict(base_config).items() if not str(k).startswith("_")}
    if name != "pndm":
        cfg["timestep_spacing"] = "trailing"
    if name == "dpm++":
        return DpmSolverPP.from_config(cfg)
    return DiffusersScheduler(name, cfg)
