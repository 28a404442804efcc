"""INT8 calibration: the representative image set and the adapters each toolchain is fed with."""
