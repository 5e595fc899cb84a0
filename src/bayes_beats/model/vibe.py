"""The variational prompt layer and the planner: pipeline components saved and loaded with it.

One vibe, several interpretations: the sentence embedding e of the vibe text gets a learned mean
mu = e + f(e) and log-variance; a sample z = mu + temperature * sigma * eps (temperature 0 → mu) both
shifts the DiT's text conditioning (a zero-initialised projection added to every token) and feeds the
planner, which writes the metas — tempo and mode — that the per-frame sketch renders. Trained with
KL(q(z|e) || N(e, prior_std^2)), so samples stay near what the words mean.
"""

from __future__ import annotations

import math

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn


class VariationalPromptHead(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(self, embed_dim: int = 384, hidden_dim: int = 256, prior_std: float = 0.5, init_logvar: float = -4.0):
        super().__init__()
        self.mean_head = nn.Sequential(nn.Linear(embed_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, embed_dim))
        self.logvar_head = nn.Sequential(nn.Linear(embed_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, embed_dim))
        self.to_tokens = nn.Linear(embed_dim, embed_dim)  # z → an offset added to every text token
        for layer in (self.mean_head[-1], self.to_tokens):  # starts as the identity: the base is untouched
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        nn.init.constant_(self.logvar_head[-1].bias, init_logvar)
        nn.init.zeros_(self.logvar_head[-1].weight)

    def forward(self, embedding: torch.Tensor, eps: torch.Tensor | None = None, temperature: float = 1.0):
        """[batch, dim] → (z, mu, logvar) with z = mu + temperature * sigma * eps (reparameterisation).

        `eps` comes from the caller (seeded per step or per request); None or temperature 0 gives z = mu."""
        mu = embedding + self.mean_head(embedding)
        logvar = self.logvar_head(embedding).clamp(-10, 4)
        if eps is None or temperature == 0:
            return mu, mu, logvar
        return mu + temperature * torch.exp(0.5 * logvar) * eps.to(mu), mu, logvar

    def kl(self, embedding: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """KL(N(mu, sigma^2) || N(embedding, prior_std^2)), mean over batch and dims."""
        prior_var = self.config.prior_std**2
        kl = 0.5 * (math.log(prior_var) - logvar + (logvar.exp() + (mu - embedding) ** 2) / prior_var - 1)
        return kl.mean()

    def condition(self, text_states: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """[batch, tokens, dim] + [batch, dim] → conditioned token states."""
        return text_states + self.to_tokens(z)[:, None, :].to(text_states.dtype)


class VibePlanner(ModelMixin, ConfigMixin):
    """Vibe embedding → metas: tempo (log-BPM, standardised) and mode (logit of major)."""

    @register_to_config
    def __init__(
        self,
        embed_dim: int = 384,
        hidden_dim: int = 128,
        log_bpm_mean: float = 4.6,
        log_bpm_std: float = 0.25,
        default_bpm: float = 100.0,
    ):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(embed_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, 2))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)  # [batch, 2]: (standardised log-bpm, major logit)

    def targets(self, bpm: torch.Tensor, major: torch.Tensor) -> torch.Tensor:
        return torch.stack([(bpm.log() - self.config.log_bpm_mean) / self.config.log_bpm_std, major.float()], dim=-1)

    def loss(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return nn.functional.mse_loss(out[:, 0], target[:, 0]) + nn.functional.binary_cross_entropy_with_logits(
            out[:, 1], target[:, 1]
        )

    def decode(self, out: torch.Tensor) -> list[tuple[float, bool]]:
        """→ [(bpm, is_major)] per row."""
        bpm = torch.exp(out[:, 0] * self.config.log_bpm_std + self.config.log_bpm_mean)
        return [(float(b), bool(m > 0)) for b, m in zip(bpm.clamp(40, 220), out[:, 1], strict=True)]
