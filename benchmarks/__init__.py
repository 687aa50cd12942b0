"""The highmark benchmark suite: highmark against the physical limits, torch.save and safetensors.

Run it with ``python -m benchmarks --size 100MB --repeat 5``; see ``docs/benchmarks.md``.
"""
