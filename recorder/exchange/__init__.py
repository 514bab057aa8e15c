"""The bitexbit exchange as the recorder sees it: REST client, trade paging, socket stream.

Each module has one job: `parse` turns JSON text into records, `classify` sorts socket
payloads into book events, `signing` makes the private methods' headers, `ratelimit` keeps
calls under the exchange's limits, `rest` talks HTTP, `paging` catches up on the trade tape
and `stream` keeps the socket.io book stream alive.
"""
