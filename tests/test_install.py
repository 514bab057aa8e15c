"""The installed dependencies are the ones the recorder needs, extras included."""

from __future__ import annotations

from importlib.metadata import requires


def test_socketio_asyncio_client_extra_brought_aiohttp() -> None:
    # "python-socketio[asyncio_client]" installs silently without aiohttp; the hyphen is right.
    assert any("python-socketio[asyncio-client]" in r for r in requires("bitexbit-recorder") or [])
    import aiohttp
    import socketio

    assert aiohttp.ClientSession is not None
    assert socketio.AsyncClient is not None
