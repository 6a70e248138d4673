"""The reference vision-language-action policy: instruction, camera frames and state in, action chunks out.

``telecorder train --policy vla --head bins|fast|flow|l1`` trains it (:mod:`.train`), a
checkpoint folder holds it (:mod:`.checkpoint`), and ``collect --device policy`` / ``telecorder
eval`` run it like any :class:`~telecorder.policies.Policy`. Importing this package imports torch.
"""

from __future__ import annotations

from .action_codes import BinCodec, FastCodec
from .config import HEADS, VLAConfig
from .model import VLAModel
from .policy import VLAPolicy
from .text import InstructionTokenizer

__all__ = ["HEADS", "BinCodec", "FastCodec", "InstructionTokenizer", "VLAConfig", "VLAModel", "VLAPolicy"]
