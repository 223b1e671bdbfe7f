"""History buffer of generated images for the discriminator update (Shrivastava et al. 2017).

Training the discriminator on a mix of current and past generator outputs, as CycleGAN does,
reduces oscillation. The buffer is one tensor on the images' device and every random draw comes
from one ``torch.Generator`` on that device, so a query never waits for the device (no ``.item()``)
and a run can be checkpointed and resumed exactly.
"""

from __future__ import annotations

from typing import Any

import torch


class ImagePool:
    """Fixed-size buffer of previously generated images.

    ``query`` follows the CycleGAN reference: until the buffer holds ``size`` images each new
    image is stored and returned; afterwards each new image is, with probability 0.5, swapped with
    a uniformly chosen stored image (the stored one is returned, the new one takes its slot), and
    otherwise returned as is. ``size == 0`` disables the pool.

    ``generator`` draws every random number; it must live on the images' device (``None`` uses
    torch's global RNG for that device).
    """

    def __init__(self, size: int, generator: torch.Generator | None = None):
        if size < 0:
            raise ValueError(f"pool size must be >= 0, got {size}")
        self.size = size
        self.generator = generator
        self._images: torch.Tensor | None = None  # (size, C, H, W), allocated on first query
        self._filled = 0

    def __len__(self) -> int:
        return self._filled

    def query(self, images: torch.Tensor, accept: torch.Tensor | None = None) -> torch.Tensor:
        """Return a batch of the same shape (N, C, H, W) mixing ``images`` with history.

        With a non-zero size the result is detached: it only feeds the discriminator step.
        ``accept`` (a bool tensor on the device) false leaves the stored images unchanged: the
        images of a step that will be skipped (non-finite) never enter the history (while the
        pool fills, such an image's slot stays blank). The random draws happen either way, so
        the stream does not depend on it.
        """
        if self.size == 0:
            return images
        images = images.detach()
        device = images.device
        if self._images is None:
            self._images = images.new_zeros((self.size, *images.shape[1:]))
        elif self._images.device != device or self._images.dtype != images.dtype:
            self._images = self._images.to(device=device, dtype=images.dtype)
        keep = torch.ones((), dtype=torch.bool, device=device) if accept is None else accept
        out = []
        for image in images:
            if self._filled < self.size:
                slot = self._filled
                self._images[slot] = torch.where(keep, image, self._images[slot])
                self._filled += 1
                out.append(image)
                continue
            swap = torch.rand((), generator=self.generator, device=device) < 0.5
            slot = torch.randint(self.size, (1,), generator=self.generator, device=device)
            stored = self._images.index_select(0, slot)[0]  # (C, H, W)
            out.append(torch.where(swap, stored, image))
            replacement = torch.where(swap & keep, image, stored)
            self._images.index_copy_(0, slot, replacement[None])
        return torch.stack(out)

    __call__ = query

    def state_dict(self) -> dict[str, Any]:
        """The stored images stacked as (M, C, H, W), M <= size (empty while the pool is), and
        the generator's state when the pool has its own generator."""
        stored = self._images[: self._filled] if self._images is not None else torch.empty(0)
        state: dict[str, Any] = {"size": self.size, "images": stored.detach().cpu().clone()}
        if self.generator is not None:
            state["rng_state"] = self.generator.get_state()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a pool saved by :meth:`state_dict`; the sizes must agree. The images move to
        the device of the next query."""
        if state["size"] != self.size:
            raise ValueError(f"pool size mismatch: saved {state['size']}, this pool {self.size}")
        images = state["images"]
        count = images.shape[0] if images.numel() > 0 else 0
        if count > self.size:
            raise ValueError(f"saved pool holds {count} images, more than {self.size}")
        self._filled = count
        self._images = None
        if count:
            self._images = images.new_zeros((self.size, *images.shape[1:]))
            self._images[:count] = images
        if self.generator is not None and "rng_state" in state:
            self.generator.set_state(state["rng_state"])
