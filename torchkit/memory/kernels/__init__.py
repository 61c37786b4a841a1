"""memrl's fast recurrence kernels, one module per job, each with its naive reference beside it
(the plain step loop written from the equations, which the tests and benchmarks compare against):

    module      fast kernel                                   reference
    hadamard    hadamard_scan      M_t = C_t ⊙ M_{t-1} + U_t  hadamard_scan_steps
    shm         shm_scan, shm_step (SHM from its factors)     shm_scan_steps
    gru         fused_gru          (nn.GRU's recurrence)      gru_steps
    backend     which implementation runs (scan_backend, compile_works)

The C++ CPU kernels they call live in ``csrc/`` and are built by ``torchkit.memory.native``.
``torchkit.memory.scan`` and ``torchkit.memory.gru_fused`` re-export these names for older imports.
"""
