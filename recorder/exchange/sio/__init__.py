"""socket.io connections of both generations, and finding out which one a server speaks.

`connection` says what the book stream needs of a connection; `v2` (socket.io 1.x/2.x,
Engine.IO v3, our own small client) and `v4` (socket.io 3.x/4.x, Engine.IO v4, through
python-socketio) provide it; `detect` asks a server which of the two it speaks; `packets`
decodes socket.io packets exactly for both.
"""
