"""synod: Byzantine fault tolerant agreement for Python.

Protocol cores (`synod.scp`, `synod.fastpay`, `synod.tusk`, `synod.crdt`) are sans-I/O
state machines (`synod.core`); `synod.runtime` drives them over real TCP and SQLite and
`synod.sim` drives them in a deterministic simulator.
"""

__version__ = "0.1.0"
