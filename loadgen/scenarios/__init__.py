"""The seed's five integration scenarios, against any CSMS: ``python -m loadgen.scenarios``.

Kept empty on purpose: ``__main__`` must monkey-patch (gevent) before anything imports
``ssl`` or ``socket``. The harness is :mod:`.harness`, the scenarios :mod:`.seed`.
"""
