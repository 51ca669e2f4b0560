#!/usr/bin/env python3
"""gate.py - gate a (simulated) chat completion with discernd from Python.

Speaks MessagePack-RPC directly over a socket with the msgpack package (Debian:
python3-msgpack), without the C library: the protocol (docs/protocol.md) is all a
client needs.

    python3 gate.py [--server HOST:PORT|unix:/path] [--key dsk_...] [--user U]
                    [--team T] [--purpose P] [--max-tokens N] [--fail] PROMPT
    python3 gate.py --server ADDR --ping

Over TCP discernd wants a key (`discern key create`): --key, or DISCERN_KEY;
it is sent with `auth` right after connecting. Over the Unix socket none is needed.

Flow: check -> (allowed) the AI call -> settle with the real tokens, or cancel
when the call failed. Exit codes as the `discern` CLI: 0 answered, 10 throttle,
11 refuse, 4 discernd unreachable, 1 a server error, 5 the completion failed.
"""
import argparse
import os
import socket
import sys

import msgpack


class RpcError(Exception):
    """A protocol error reply: code is the stable wire code."""

    def __init__(self, code, message):
        super().__init__(f"{message} ({code})")
        self.code = code


class Discern:
    """A minimal MessagePack-RPC client: one socket, requests matched by msgid."""

    def __init__(self, address, timeout=2.0):
        if address.startswith("unix:"):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(address[5:])
        else:
            host, _, port = address.rpartition(":")
            self.sock = socket.create_connection((host.strip("[]"), int(port)), timeout)
        self.unpacker = msgpack.Unpacker(raw=False, max_buffer_size=1 << 20)
        self.next_id = 1

    def call(self, method, **params):
        msgid = self.next_id
        self.next_id += 1
        self.sock.sendall(msgpack.packb([0, msgid, method, [params]]))
        while True:
            for msg in self.unpacker:
                # [1, msgid, error, result]; anything else (an `error` notification)
                # is skipped
                if len(msg) == 4 and msg[0] == 1 and msg[1] == msgid:
                    if msg[2] is not None:
                        raise RpcError(msg[2]["code"], msg[2]["message"])
                    return msg[3]
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("discernd closed the connection")
            self.unpacker.feed(data)

    def close(self):
        self.sock.close()


def complete(prompt, max_tokens, fail):
    """The "AI call": a real program calls its provider here and reads the usage."""
    if fail:
        raise RuntimeError("provider error (simulated)")
    reply = f'You said: "{prompt}". Noted.'
    usage = {"input_tokens": len(prompt) // 4 + 1,
             "output_tokens": min(max_tokens, len(reply) // 4 + 1)}
    return reply, usage


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--server", default="127.0.0.1:7878")
    ap.add_argument("--key", default=os.environ.get("DISCERN_KEY"),
                    help="API key token (default DISCERN_KEY)")
    ap.add_argument("--user", default="demo")
    ap.add_argument("--team")
    ap.add_argument("--purpose", default="chat")
    ap.add_argument("--provider", default="openai")
    ap.add_argument("--model", default="gpt-4o-mini")
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--fail", action="store_true", help="simulate a failing completion")
    ap.add_argument("--ping", action="store_true", help="only ping the server")
    ap.add_argument("prompt", nargs="?")
    args = ap.parse_args()

    try:
        d = Discern(args.server)
    except OSError as e:
        print(f"gate.py: discernd unreachable at {args.server}: {e}", file=sys.stderr)
        return 4
    try:
        if args.key:
            d.call("auth", token=args.key)
        if args.ping:
            pong = d.call("ping")
            print(f"pong from discernd {pong['version']}")
            return 0
        if not args.prompt:
            ap.error("give a PROMPT")
        subject = {"user": args.user}
        if args.team:
            subject["team"] = args.team
        decision = d.call("check", subject=subject, provider=args.provider, model=args.model,
                          input_tokens=len(args.prompt) // 4 + 1,
                          output_tokens=args.max_tokens, purpose=args.purpose)
        if decision["decision"] != "allow":
            extra = ""
            if decision["decision"] == "throttle":
                extra = f" (retry after {decision.get('retry_after_s', 0)} s)"
            print(f"gate.py: {decision['decision']}: {decision['reason']}{extra}",
                  file=sys.stderr)
            return 10 if decision["decision"] == "throttle" else 11
        reservation = decision.get("reservation")
        try:
            reply, usage = complete(args.prompt, args.max_tokens, args.fail)
        except RuntimeError as e:
            if reservation:
                d.call("cancel", reservation=reservation)
            print(f"gate.py: the completion failed ({e}); the hold was cancelled",
                  file=sys.stderr)
            return 5
        print(reply)
        if reservation:
            settled = d.call("settle", reservation=reservation, **usage)
            charged = settled["charged"]
            print(f"settled {reservation}: {charged.get('tokens', 0):g} tokens, "
                  f"{charged.get('gco2e', 0):g} gCO2e", file=sys.stderr)
        return 0
    except RpcError as e:
        print(f"gate.py: {e}", file=sys.stderr)
        return 3 if e.code in ("unknown_provider", "unknown_model", "unknown_zone") else 1
    except (OSError, ConnectionError) as e:
        print(f"gate.py: discernd unreachable: {e}", file=sys.stderr)
        return 4
    finally:
        d.close()


if __name__ == "__main__":
    sys.exit(main())
