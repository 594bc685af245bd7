"""Portability across MPI libraries (MPICH, Open MPI, Intel MPI).

A non-blocking MPI call may read its send buffer and write its receive buffer at
any time until ``Wait``; mpi4py keeps no reference to them. MPICH and Intel MPI
happen to read early, Open MPI reads late -- so a buffer freed before ``Wait`` is
a wrong result on Open MPI only. The checks here catch that under any library.
"""

import weakref

import numpy as np
import pytest

from petuum_mpi.strads import Engine, make_scheduler

from test_strads import Separable


class LateComm:
    """A communicator whose non-blocking collectives touch their buffers only at
    ``Wait`` (as Open MPI may) and check that the caller still holds them."""

    def __init__(self, comm):
        self._comm = comm
        self.started = 0
        self.completed = 0

    def __getattr__(self, name):
        return getattr(self._comm, name)

    def Iallreduce(self, send, recv):
        self.started += 1
        refs = (weakref.ref(send), weakref.ref(recv))
        del send, recv
        owner = self

        class Request:
            def Wait(self):
                send, recv = refs[0](), refs[1]()
                assert send is not None, "send buffer of an Iallreduce freed before Wait"
                assert recv is not None, "receive buffer of an Iallreduce freed before Wait"
                owner._comm.Allreduce(send, recv)
                owner.completed += 1

        return Request()


@pytest.mark.mpi
@pytest.mark.parametrize("depth", [0, 1, 3])
def test_engine_keeps_iallreduce_buffers_until_wait(comm, depth):
    late = LateComm(comm)
    app = Separable(comm)
    sched = make_scheduler("cyclic", 50, round_size=5, depth=depth, seed=0)
    eng = Engine(app, sched, late, pipeline_depth=depth)
    assert eng.run(50) + eng.run(23) == 73
    assert late.started == late.completed == (0 if comm.size == 1 else len(app.events))
    touched = np.unique(np.concatenate([e[2] for e in app.events]))
    np.testing.assert_allclose(app.x[touched], app.T[:, touched].sum(axis=0), rtol=1e-12)
