"""Counter-based per-request random stream: draw n is a pure function of (seed, n).

The whole state is the 64-bit seed, so a snapshot is 8 bytes and restores the exact continuation on
any device, process or torch version.
"""

from __future__ import annotations

import os
import struct

_MASK64 = (1 << 64) - 1
_GOLDEN_GAMMA = 0x9E3779B97F4A7C15  # splitmix64's odd increment
_STATE_FORMAT = "<Q"
_INV_2_53 = 1.0 / (1 << 53)


def _mix64(z: int) -> int:
    """splitmix64 finaliser: a bijection on 64-bit ints with full avalanche."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


class RequestRng:
    """Uniform draws in [0, 1) addressed by a counter (the request's output position).

    NOTE(sampling): we chose a counter-based stream over a stateful torch.Generator because
      - a torch.Generator's state is ~5 KB, its format belongs to torch, and a CUDA generator's
        stream differs from a CPU one, so snapshots would not survive a device or version change;
      - keying draws by output position means rolling back tokens (stop strings, preemption) also
        rolls back the randomness, with no state to rewind;
      - sampling needs one draw per token (inverse-CDF), computed in Python in ~1 us, and only that
        float travels to the device.
    """

    __slots__ = ("_key", "_seed")

    def __init__(self, seed: int | None = None) -> None:
        if seed is None:
            seed = int.from_bytes(os.urandom(8), "little")
        self._reseed(seed)

    def _reseed(self, seed: int) -> None:
        self._seed = seed & _MASK64
        # Mixing the seed first keeps nearby seeds (0, 1, 2, ...) from giving related streams.
        self._key = _mix64(self._seed ^ 0x5DEECE66D)

    @property
    def seed(self) -> int:
        return self._seed

    def uniform(self, counter: int) -> float:
        """Draw number `counter` (>= 0) of this stream, in [0, 1) with 53 random bits."""
        assert counter >= 0, f"counter must be >= 0, got {counter}"
        z = _mix64((self._key + (counter + 1) * _GOLDEN_GAMMA) & _MASK64)
        # A second keyed round makes streams of different seeds more than shifts of one sequence.
        z = _mix64(z ^ self._key)
        return (z >> 11) * _INV_2_53

    def get_state(self) -> bytes:
        return struct.pack(_STATE_FORMAT, self._seed)

    def set_state(self, state: bytes) -> None:
        if len(state) != struct.calcsize(_STATE_FORMAT):
            raise ValueError(
                f"RNG state must be {struct.calcsize(_STATE_FORMAT)} bytes, got {len(state)}"
            )
        (seed,) = struct.unpack(_STATE_FORMAT, state)
        self._reseed(seed)

    @classmethod
    def from_state(cls, state: bytes) -> RequestRng:
        rng = cls(0)
        rng.set_state(state)
        return rng

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RequestRng) and other._seed == self._seed

    def __hash__(self) -> int:
        return hash(self._seed)

    def __repr__(self) -> str:
        return f"RequestRng(seed={self._seed})"
