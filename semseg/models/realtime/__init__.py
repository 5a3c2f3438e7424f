"""Real-time segmentation networks that semseg writes itself, for training from scratch on a CPU budget.

BiSeNet V2, DDRNet-23-slim, PIDNet-S and ERFNet, each in its own file from its
paper; ``blocks`` holds the layers they share, ``common`` the model wrapper.
Importing this package registers ``bisenetv2``, ``ddrnet_23_slim``,
``pidnet_s`` and ``erfnet``.
"""

from semseg.models.realtime import bisenetv2, ddrnet, erfnet, pidnet  # noqa: F401  (register the builders)
