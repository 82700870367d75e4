"""Point-to-point messages between pipeline ranks over ``torch.distributed``.

A message is a fixed-size int64 header (kind, step, micro-batch, then dtype and shape of each
tensor) followed by the tensors themselves, so shapes may change from batch to batch (text).
Only forward traffic exists: rank k sends to k+1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.distributed as dist
from torch import Tensor

HEADER_LEN = 128
DATA, END = 1, 2
_DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32,
           torch.int16, torch.int8, torch.uint8, torch.bool]
_CODE = {dt: i for i, dt in enumerate(_DTYPES)}


@dataclass
class Message:
    """A pipeline message: its ``kind`` (DATA or END), step, micro-batch, tensors and flag."""

    kind: int
    step: int = 0
    micro: int = 0
    tensors: list[Tensor] = field(default_factory=list)
    flag: int = 0  # free for the sender's use (the pipeline marks tuple flows with it)
    # encode_header(self), if done already
    header: Optional[Tensor] = field(default=None, compare=False, repr=False)


def encode_header(msg: Message) -> Tensor:
    """The int64 header describing ``msg``'s kind, position and tensor shapes."""
    values = [msg.kind, msg.step, msg.micro, msg.flag, len(msg.tensors)]
    for t in msg.tensors:
        if t.dtype not in _CODE:
            raise TypeError(f"cannot send tensors of dtype {t.dtype} between ranks")
        values += [_CODE[t.dtype], t.dim(), *t.shape]
    if len(values) > HEADER_LEN:
        raise ValueError(f"message needs a {len(values)}-entry header, more than {HEADER_LEN}")
    header = torch.zeros(HEADER_LEN, dtype=torch.int64)
    header[: len(values)] = torch.tensor(values, dtype=torch.int64)
    return header


def decode_header(header: Tensor) -> tuple[Message, list[tuple[torch.dtype, tuple[int, ...]]]]:
    """Inverse of :func:`encode_header`: the message skeleton and the (dtype, shape) of its tensors."""
    v = header.tolist()
    msg = Message(kind=v[0], step=v[1], micro=v[2], flag=v[3])
    specs, i = [], 5
    for _ in range(v[4]):
        dtype, ndim = _DTYPES[v[i]], v[i + 1]
        specs.append((dtype, tuple(v[i + 2 : i + 2 + ndim])))
        i += 2 + ndim
    return msg, specs


def send(msg: Message, dst: int, device: torch.device, group: Optional[dist.ProcessGroup] = None) -> None:
    """Send ``msg`` to rank ``dst`` (header first, then each tensor); returns when all are sent."""
    header = msg.header if msg.header is not None else encode_header(msg)
    works = [dist.isend(header.to(device), dst, group=group)]
    payload = [t.contiguous().to(device) for t in msg.tensors]
    works += [dist.isend(t, dst, group=group) for t in payload]
    _wait_all(works)


def recv(src: int, device: torch.device, group: Optional[dist.ProcessGroup] = None) -> Message:
    """Receive one message from rank ``src``."""
    header = torch.empty(HEADER_LEN, dtype=torch.int64, device=device)
    _wait_all([dist.irecv(header, src, group=group)])
    msg, specs = decode_header(header.cpu())
    msg.tensors = [torch.empty(shape, dtype=dtype, device=device) for dtype, shape in specs]
    _wait_all([dist.irecv(t, src, group=group) for t in msg.tensors])
    return msg


def _wait_all(works: list[Optional[dist.Work]]) -> None:
    """Wait for each operation to complete (torch returns None instead only to a rank outside
    the group, which never sends or receives here)."""
    for w in works:
        assert w is not None
        w.wait()
