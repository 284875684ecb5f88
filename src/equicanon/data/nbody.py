"""Charged-particle n-body systems (the NRI / EGNN benchmark), simulated with a seeded generator.

Kipf et al. (2018, NRI) simulate ``N`` particles with charges ``q ∈ {-1, +1}`` under
Coulomb-like forces; Satorras et al. (2021, EGNN) moved it to 3-D, removed the box
and predict positions 1000 integration steps ahead (their frame 30 → 40 with a frame every
100 steps of ``dt = 0.001``). Everything here is vectorised over systems in float64;
nothing is read from or written to disk.

Physics (unit masses): the force on particle ``i`` is

    F_i = s Σ_j q_i q_j (r_i − r_j) / max(|r_i − r_j|, d₀)³

(``s`` = ``interaction_strength``, ``d₀`` = ``min_distance``): like charges repel. NRI clamps
each *component* of the total force to ±100, which depends on the axes and breaks both
rotation equivariance and momentum conservation; clamping the pair *distance* instead keeps
the forces pairwise antisymmetric and rotation-equivariant (``d₀ = 0.1`` caps a pair's force
at 100, NRI's bound). Integration is kick-drift-kick leapfrog (velocity Verlet), symplectic
and time-reversible, so total momentum is conserved to rounding and energy to ``O(dt²)``.

    >>> gen = torch.Generator().manual_seed(0)
    >>> x, y = make_nbody(8, generator=gen)     # EGNN's setup: 5 particles, 1000 steps ahead
    >>> x.shape, y.shape                         # x: [position, velocity, charge], y: future positions
    (torch.Size([8, 5, 7]), torch.Size([8, 5, 3]))
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch

from ..errors import ConfigError, check_floating, check_number, check_positive_int, check_shape

__all__ = ["ChargedTrajectories", "coulomb_forces", "charged_energy", "integrate_charged", "simulate_charged",
           "make_nbody", "nbody_baselines"]


class ChargedTrajectories(NamedTuple):
    """Sampled states of ``B`` systems of ``N`` particles (float64).

    Attributes:
        positions: ``(B, F, N, 3)``; frame ``k`` is the state after ``k · sample_every`` steps.
        velocities: ``(B, F, N, 3)``, at the same times as the positions.
        charges: ``(B, N)``, constant in time.
    """

    positions: torch.Tensor
    velocities: torch.Tensor
    charges: torch.Tensor


def _forces(pos: torch.Tensor, qq: torch.Tensor, min_distance: float) -> torch.Tensor:
    """Forces in coordinate-major layout: ``pos (3, B, N)``, ``qq = s q_i q_j (B, N, N)`` → ``(3, B, N)``.

    (Reductions over the last, size-``N`` axis of ``(3, B, N, N)`` run about 2x faster than over
    a trailing size-3 axis; the simulation spends its time here.)
    """
    diff = pos[:, :, :, None] - pos[:, :, None, :]  # (3, B, N, N): r_i - r_j, zero on the diagonal
    inv = (diff * diff).sum(0).clamp_min(min_distance**2).rsqrt()
    return (diff * (qq * (inv * inv * inv))).sum(-1)


def coulomb_forces(positions: torch.Tensor, charges: torch.Tensor, *, interaction_strength: float = 1.0,
                   min_distance: float = 0.1) -> torch.Tensor:
    """Forces ``(B, N, 3)`` on particles at ``positions (B, N, 3)`` with ``charges (B, N)`` (see the module docstring)."""
    check_shape(positions, "B N 3", name="positions")
    check_shape(charges, "B N", name="charges", B=positions.shape[0], N=positions.shape[1])
    qq = interaction_strength * charges[:, :, None] * charges[:, None, :]
    return _forces(positions.permute(2, 0, 1).contiguous(), qq, min_distance).permute(1, 2, 0)


def charged_energy(positions: torch.Tensor, velocities: torch.Tensor, charges: torch.Tensor, *,
                   interaction_strength: float = 1.0, min_distance: float = 0.1) -> torch.Tensor:
    """Total energy ``(...)`` of states ``positions, velocities (..., N, 3)``, ``charges (..., N)``: kinetic + potential.

    The pair potential is ``s q_i q_j / r`` beyond ``min_distance`` and its continuation
    ``s q_i q_j (3/(2d₀) − r²/(2d₀³))`` inside, whose gradient is the clamped force.
    """
    kinetic = 0.5 * (velocities * velocities).sum(dim=(-1, -2))
    diff = positions[..., :, None, :] - positions[..., None, :, :]
    r = (diff * diff).sum(-1).sqrt()
    d0 = min_distance
    pair = torch.where(r >= d0, 1 / r.clamp_min(d0), 1.5 / d0 - r * r / (2 * d0**3))
    qq = charges[..., :, None] * charges[..., None, :]
    off_diagonal = 1 - torch.eye(charges.shape[-1], dtype=pair.dtype, device=pair.device)
    return kinetic + 0.5 * interaction_strength * (qq * pair * off_diagonal).sum(dim=(-1, -2))


def _reflect(pos: torch.Tensor, vel: torch.Tensor, box: float) -> tuple[torch.Tensor, torch.Tensor]:
    """NRI's elastic walls at ±box: a coordinate outside is mirrored back in (as often as it takes, a fold of
    period 4·box) and its velocity component reversed after an odd number of mirrorings."""
    outside = pos.abs() > box
    u = torch.remainder(pos + box, 4 * box)
    odd = u > 2 * box
    pos = torch.where(outside, torch.where(odd, 3 * box - u, u - box), pos)
    vel = torch.where(outside & odd, -vel, vel)
    return pos, vel


def integrate_charged(positions: torch.Tensor, velocities: torch.Tensor, charges: torch.Tensor, steps: int, *,
                      dt: float = 0.001, sample_every: int | None = None, interaction_strength: float = 1.0,
                      min_distance: float = 0.1, box: float | None = None) -> ChargedTrajectories:
    """Integrate charged systems from a given state with kick-drift-kick leapfrog, in float64.

    Args:
        positions, velocities: ``(B, N, 3)`` initial state (not modified).
        charges: ``(B, N)``.
        steps: integration steps (``>= 0``).
        dt: time step.
        sample_every: keep a frame every this many steps (must divide ``steps``; default: ``steps``,
            i.e. the first and last state only).
        interaction_strength, min_distance: see :func:`coulomb_forces`.
        box: half-width of NRI's reflecting box, or ``None`` (EGNN: no box). The walls break
            rotation equivariance and momentum conservation.

    Returns:
        :class:`ChargedTrajectories` with ``steps // sample_every + 1`` frames (frame 0 is the input,
        after the walls for a particle outside the box).
    """
    sizes = check_shape(positions, "B N 3", name="positions")
    check_shape(velocities, "B N 3", name="velocities", **sizes)
    check_shape(charges, "B N", name="charges", **sizes)
    for name, t in (("positions", positions), ("velocities", velocities), ("charges", charges)):
        check_floating(t, name)
    steps = check_positive_int(steps, "steps", minimum=0)
    every = max(steps, 1) if sample_every is None else check_positive_int(sample_every, "sample_every")
    if steps % every:
        raise ConfigError(f"sample_every must divide steps: got steps={steps}, sample_every={every}")
    dt = check_number(dt, "dt", minimum=0.0, strict=True)
    strength = check_number(interaction_strength, "interaction_strength")
    d0 = check_number(min_distance, "min_distance", minimum=0.0, strict=True)
    walls = None if box is None else check_number(box, "box", minimum=0.0, strict=True)

    # coordinate-major state (3, B, N), see _forces
    pos = positions.double().permute(2, 0, 1).contiguous()
    vel = velocities.double().permute(2, 0, 1).contiguous()
    q = charges.double().clone()
    qq = strength * q[:, :, None] * q[:, None, :]
    if walls is not None:
        pos, vel = _reflect(pos, vel, walls)
    frames_pos, frames_vel = [pos], [vel]
    force = _forces(pos, qq, d0)
    for step in range(1, steps + 1):
        vel = torch.add(vel, force, alpha=0.5 * dt)
        pos = torch.add(pos, vel, alpha=dt)
        if walls is not None:
            pos, vel = _reflect(pos, vel, walls)
        force = _forces(pos, qq, d0)
        vel = torch.add(vel, force, alpha=0.5 * dt)
        if step % every == 0:
            frames_pos.append(pos)
            frames_vel.append(vel)
    return ChargedTrajectories(_frames(frames_pos), _frames(frames_vel), q)


def _frames(states: list[torch.Tensor]) -> torch.Tensor:
    """Coordinate-major states ``F × (3, B, N)`` → ``(B, F, N, 3)``."""
    return torch.stack(states).permute(2, 0, 3, 1).contiguous()


def _check_generator(generator: object) -> torch.Generator:
    if not isinstance(generator, torch.Generator):
        raise ConfigError(f"generator: expected a torch.Generator (e.g. torch.Generator().manual_seed(0)), "
                          f"got {type(generator).__name__}")
    return generator


def simulate_charged(n_systems: int, particles: int = 5, steps: int = 1000, *, generator: torch.Generator,
                     sample_every: int = 100, dt: float = 0.001, box: float | None = None, charge_prob: float = 0.5,
                     interaction_strength: float = 1.0, vel_norm: float = 0.5, loc_std: float = 1.0,
                     min_distance: float = 0.1) -> ChargedTrajectories:
    """Random charged systems and their trajectories (NRI's ``ChargedParticlesSim`` in 3-D, EGNN's settings).

    Initial positions are ``N(0, loc_std²)`` per coordinate, velocities random directions of
    norm ``vel_norm``, charges ``+1`` with probability ``charge_prob`` and ``-1`` otherwise.

    Args:
        n_systems: systems ``B`` to simulate (all at once).
        particles: particles ``N`` per system.
        steps: integration steps; a frame every ``sample_every`` (which must divide it).
        generator: the source of all randomness (same seed, same trajectories).
        dt, box, interaction_strength, min_distance: see :func:`integrate_charged`.
        charge_prob, vel_norm, loc_std: the initial distribution.

    Returns:
        :class:`ChargedTrajectories`: positions and velocities ``(B, steps // sample_every + 1, N, 3)``, charges ``(B, N)``.
    """
    n = check_positive_int(n_systems, "n_systems")
    particles = check_positive_int(particles, "particles")
    gen = _check_generator(generator)
    p = check_number(charge_prob, "charge_prob", minimum=0.0)
    if p > 1:
        raise ConfigError(f"charge_prob: expected a probability in [0, 1], got {charge_prob!r}")
    speed = check_number(vel_norm, "vel_norm", minimum=0.0)
    spread = check_number(loc_std, "loc_std", minimum=0.0, strict=True)
    pos = torch.randn(n, particles, 3, generator=gen, dtype=torch.float64) * spread
    direction = torch.randn(n, particles, 3, generator=gen, dtype=torch.float64)
    vel = direction / direction.norm(dim=-1, keepdim=True).clamp_min(1e-12) * speed
    charges = torch.where(torch.rand(n, particles, generator=gen, dtype=torch.float64) < p, 1.0, -1.0).double()
    return integrate_charged(pos, vel, charges, steps, dt=dt, sample_every=sample_every,
                             interaction_strength=interaction_strength, min_distance=min_distance, box=box)


def make_nbody(n: int, *, generator: torch.Generator, particles: int = 5, horizon: int = 1000, dt: float = 0.001,
               burn_in: int = 3000, **simulation: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Examples of the n-body regression task: the state now → positions ``horizon`` steps later.

    As EGNN (``nbody_small``: frame 30 → 40, a frame every 100 steps), the input state is taken
    after ``burn_in`` steps of a fresh random system, so velocities have left their initial
    fixed norm.

    Args:
        n: examples.
        generator: the source of all randomness.
        particles: particles per system.
        horizon: integration steps between input and target (``>= 1``).
        dt: time step.
        burn_in: steps simulated before the input state (``>= 0``).
        simulation: further keywords of :func:`simulate_charged` (``charge_prob``, ``vel_norm``, ...).

    Returns:
        ``x (n, particles, 7)`` float32, columns ``[position (3), velocity (3), charge (1)]`` as
        :class:`~equicanon.actions.Particles` expects, and ``y (n, particles, 3)`` float32, the
        positions ``horizon`` steps later.
    """
    horizon = check_positive_int(horizon, "horizon")
    burn_in = check_positive_int(burn_in, "burn_in", minimum=0)
    every = math.gcd(burn_in, horizon)
    traj = simulate_charged(n, particles, burn_in + horizon, generator=generator, sample_every=every, dt=dt,
                            **simulation)
    start = burn_in // every
    x = torch.cat([traj.positions[:, start], traj.velocities[:, start], traj.charges[..., None]], dim=-1)
    return x.float(), traj.positions[:, -1].float()


def nbody_baselines(x: torch.Tensor, y: torch.Tensor, horizon_time: float) -> dict[str, float]:
    """MSE of two physics-free baselines on examples ``x (B, N, 7)``, ``y (B, N, 3)``.

    ``"constant"`` predicts the current positions, ``"linear"`` the straight-line extrapolation
    ``p + horizon_time · v`` (``horizon_time = horizon · dt``, e.g. 1.0 for EGNN's task).
    """
    check_shape(x, "B N F", name="x")
    check_shape(y, "B N 3", name="y", B=x.shape[0], N=x.shape[1])
    pos, vel = x[..., :3].double(), x[..., 3:6].double()
    target = y.double()
    return {"constant": float(((pos - target) ** 2).mean()),
            "linear": float(((pos + horizon_time * vel - target) ** 2).mean())}
