"""`recorder probe`: what an operator runs first against a live exchange.

The docs leave open what recording depends on (the socket.io generation, which id a cancel
names, the event names, the largest trade page, the signature's url-encoding); the probe
asks the exchange itself, with the recorder's own client and stream, and says whether
recording would work (docs/operations.md, "First run against a live exchange").
"""

from recorder.probe.report import Finding, Report
from recorder.probe.run import probe

__all__ = ["Finding", "Report", "probe"]
