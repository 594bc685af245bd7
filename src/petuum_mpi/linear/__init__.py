"""Linear models over rows, shared by apps and examples: row access for dense and CSR rows
(:mod:`.rows`), losses (:mod:`.losses`), the Numba kernels written once for both
(:mod:`.kernels`: full batch, SGD, SVRG) and the full-batch objective for
:func:`petuum_mpi.fullbatch.minimize` (:mod:`.objective`)."""
