"""History buffer of generated images for the discriminator update (Shrivastava et al. 2017).

Training the discriminator on a mix of current and past generator outputs, as CycleGAN
does, reduces oscillation. All randomness comes from one ``torch.Generator`` so runs are
reproducible and the pool can be checkpointed and resumed exactly.
"""

from __future__ import annotations

from typing import Any

import torch


class ImagePool:
    """Fixed-size buffer of previously generated images.

    ``query`` follows the CycleGAN reference: until the buffer holds ``size`` images each
    new image is stored and returned; afterwards each new image is, with probability 0.5,
    swapped with a uniformly chosen stored image (the stored one is returned, the new one
    takes its slot), and otherwise returned as is. ``size == 0`` disables the pool.

    ``generator`` is a CPU generator used for every random draw; ``None`` uses torch's
    global RNG, which is then only reproducible through ``torch.manual_seed``.
    """

    def __init__(self, size: int, generator: torch.Generator | None = None):
        if size < 0:
            raise ValueError(f"pool size must be >= 0, got {size}")
        self.size = size
        self.generator = generator
        # Each entry is one detached image (C, H, W).
        self._images: list[torch.Tensor] = []

    def __len__(self) -> int:
        return len(self._images)

    def query(self, images: torch.Tensor) -> torch.Tensor:
        """Return a batch of the same shape (N, C, H, W) mixing ``images`` with history.

        With a non-zero size the result is detached: it only feeds the discriminator step.
        """
        if self.size == 0:
            return images
        images = images.detach()
        out: list[torch.Tensor] = []
        for image in images:
            if len(self._images) < self.size:
                self._images.append(image.clone())
                out.append(image)
            elif torch.rand((), generator=self.generator).item() < 0.5:
                slot = int(torch.randint(self.size, (), generator=self.generator).item())
                out.append(self._images[slot].to(device=image.device, dtype=image.dtype))
                self._images[slot] = image.clone()
            else:
                out.append(image)
        return torch.stack(out)

    __call__ = query

    def state_dict(self) -> dict[str, Any]:
        """Stored images stacked as (M, C, H, W) (an empty tensor while the pool is empty),
        plus the generator state when the pool has its own generator."""
        state: dict[str, Any] = {
            "size": self.size,
            "images": torch.stack(self._images) if self._images else torch.empty(0),
        }
        if self.generator is not None:
            state["rng_state"] = self.generator.get_state()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a pool saved by :meth:`state_dict`; the sizes must agree."""
        if state["size"] != self.size:
            raise ValueError(f"pool size mismatch: saved {state['size']}, this pool {self.size}")
        images = state["images"]
        if images.numel() > 0 and images.shape[0] > self.size:
            raise ValueError(f"saved pool holds {images.shape[0]} images, more than {self.size}")
        self._images = [image.clone() for image in images] if images.numel() > 0 else []
        if self.generator is not None and "rng_state" in state:
            self.generator.set_state(state["rng_state"])
