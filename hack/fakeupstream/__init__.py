"""fakeupstream: an OpenAI-compatible fake model provider whose faults are set at run time.

``python -m fakeupstream`` serves it (HOST/PORT); :func:`running_fake_upstream` starts one for
a test; :class:`FakeUpstreamClient` sets faults and reads stats. See :mod:`fakeupstream.app`
for the answers it gives and :mod:`fakeupstream.faults` for how faults are scheduled.
"""

from fakeupstream.client import FakeUpstreamClient, running_fake_upstream

__all__ = ["FakeUpstreamClient", "running_fake_upstream"]
