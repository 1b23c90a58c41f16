"""Where the code runs: the device, the DDP process group and mixed precision."""
