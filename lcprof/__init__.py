"""lcprof: what long-context LLM inference costs, and why.

Layers (a lower one never imports a higher one):
  spec, units, hardware  -- what a model and a GPU are (no torch)
  cost                   -- FLOPs, bytes, memory, roofline (numpy only, no torch)
  fit, plan, report      -- consume cost results and measurement tables (no torch)
  measure, ring runtime  -- the only places that import torch
  cli                    -- thin click commands
"""

from lcprof._version import __version__

__all__ = ["__version__"]
