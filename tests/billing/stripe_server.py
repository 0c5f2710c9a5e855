"""A small Stripe-compatible HTTP server for tests: the part of the Stripe API that ModelMeter calls.

It speaks Stripe's wire format (form-encoded bracket params in, JSON objects and error envelopes out,
`Idempotency-Key` replay) so the official SDK talks to it through `api_base`. It enforces the
meter-event rules (identifier dedupe, timestamp window: <= 35 days back, <= 5 minutes ahead) and
signs webhooks like Stripe (`Stripe-Signature: t=<ts>,v1=<hex HMAC-SHA256 of "<ts>.<payload>">`).
Tests drive it through its methods (complete a checkout, change a subscription, hold a request).
"""

import hashlib
import hmac
import json
import re
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

DAY = 86400


class StripeError(Exception):
    def __init__(self, status: int, message: str, code: str = "", param: str = "") -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param


def nest(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """`a[b][0][c]=v` form pairs -> nested dicts; all-digit keys become lists."""
    root: dict[str, Any] = {}
    for name, value in pairs:
        parts = re.findall(r"[^\[\]]+|\[\]", name.replace("[]", "[__append__]"))
        node = root
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        last = parts[-1]
        if last == "__append__":
            last = str(len(node))
        node[last] = value
    return _listify(root)


def _listify(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    if node and all(k.isdigit() for k in node):
        return [_listify(node[k]) for k in sorted(node, key=int)]
    return {k: _listify(v) for k, v in node.items()}


def _list(data: list[dict[str, Any]], url: str) -> dict[str, Any]:
    return {"object": "list", "data": data, "has_more": False, "url": url}


class StripeServer:
    def __init__(self, webhook_secret: str) -> None:
        self.webhook_secret = webhook_secret
        self.lock = threading.RLock()
        self.httpd: ThreadingHTTPServer | None = None
        self.reset()

    # --- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        server = self

        class Handler(_Handler):
            stripe = server

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.httpd is not None:
            self.release()
            self.httpd.shutdown()
            self.httpd.server_close()

    @property
    def url(self) -> str:
        assert self.httpd is not None
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def reset(self) -> None:
        with self.lock:
            self.objects: dict[str, dict[str, Any]] = {}
            self.meter_events: list[dict[str, Any]] = []
            self.idempotent: dict[tuple[str, str], tuple[int, bytes]] = {}
            self.requests: list[tuple[str, str]] = []
            self.fail_meter_events = 0  # answer the next N meter events with 500 without recording
            self.hold_mode = ""  # "before_accept" / "after_accept": block meter-event requests
            self.arrived = threading.Event()
            self.released = threading.Event()

    # --- test controls -----------------------------------------------------------------------------
    def hold(self, mode: str) -> None:
        self.hold_mode, self.arrived, self.released = mode, threading.Event(), threading.Event()

    def release(self) -> None:
        self.hold_mode = ""
        self.released.set()

    def total(self, customer: str, event_name: str) -> int:
        return sum(
            int(e["payload"]["value"])
            for e in self.meter_events
            if e["payload"]["stripe_customer_id"] == customer and e["event_name"] == event_name
        )

    def complete_checkout(self, session_id: str, *, status: str = "active") -> dict[str, Any]:
        with self.lock:
            session = self.objects[session_id]
            if session["status"] != "open":
                raise StripeError(400, f"This Checkout Session is {session['status']}: it cannot be paid.")
            items = [{"price": item["price"]} for item in session["_line_items"]]
            subscription = self._subscription_create(
                session["customer"], items, status, session.get("_subscription_metadata", {})
            )
            session.update(status="complete", subscription=subscription["id"])
            return self.public(session)

    def subscription_set(self, subscription_id: str, **fields: Any) -> dict[str, Any]:
        with self.lock:
            self.objects[subscription_id].update(fields)
            return self.public(self.objects[subscription_id])

    def invoice_create(self, customer: str, subscription: str, **fields: Any) -> dict[str, Any]:
        invoice_id = self._id("in")
        invoice = {
            "id": invoice_id,
            "object": "invoice",
            "customer": customer,
            "subscription": subscription,
            "status": "open",
            "number": f"MM-{len(self.objects):04d}",
            "currency": "usd",
            "amount_due": 0,
            "amount_paid": 0,
            "created": int(time.time()),
            "period_start": int(time.time()) - 30 * DAY,
            "period_end": int(time.time()),
            "hosted_invoice_url": f"{self.url}/i/{invoice_id}",
            "invoice_pdf": f"{self.url}/i/{invoice_id}/pdf",
            "livemode": False,
            "parent": {"subscription_details": {"subscription": subscription}},
            **fields,
        }
        with self.lock:
            self.objects[invoice_id] = invoice
            if subscription in self.objects:
                self.objects[subscription]["latest_invoice"] = invoice_id
        return self.public(invoice)

    def event(self, type_: str, obj: dict[str, Any], *, created: int | None = None) -> dict[str, Any]:
        return {
            "id": self._id("evt"),
            "object": "event",
            "type": type_,
            "api_version": "2026-10-28.endive",
            "created": created or int(time.time()),
            "livemode": False,
            "data": {"object": obj},
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
        }

    def sign(self, payload: bytes, *, timestamp: int | None = None, secret: str | None = None) -> str:
        ts = int(time.time()) if timestamp is None else timestamp
        mac = hmac.new((secret or self.webhook_secret).encode(), f"{ts}.".encode() + payload, hashlib.sha256)
        return f"t={ts},v1={mac.hexdigest()}"

    def deliver(self, url: str, event: dict[str, Any], **sign_options: Any) -> tuple[int, bytes]:
        """POST the event, signed, to a webhook endpoint (like Stripe does)."""
        payload = json.dumps(event).encode()
        request = urllib.request.Request(
            url,
            data=payload,
            method="POST",
            headers={"Content-Type": "application/json", "Stripe-Signature": self.sign(payload, **sign_options)},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    # --- objects -----------------------------------------------------------------------------------
    def _id(self, prefix: str) -> str:
        return f"{prefix}_{uuid.uuid4().hex[:24]}"

    def public(self, obj: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in obj.items() if not k.startswith("_")}

    def get(self, object_id: str, kind: str) -> dict[str, Any]:
        obj = self.objects.get(object_id)
        if obj is None or obj["object"] != kind:
            raise StripeError(404, f"No such {kind}: '{object_id}'", "resource_missing", "id")
        return obj

    def customer_param(self, p: dict[str, Any]) -> str:
        """The `customer` parameter of a request, which must exist (Stripe: 400 resource_missing, param customer)."""
        customer_id = p.get("customer", "")
        obj = self.objects.get(customer_id)
        if obj is None or obj["object"] != "customer":
            raise StripeError(400, f"No such customer: '{customer_id}'", "resource_missing", "customer")
        return customer_id

    def _subscription_create(
        self, customer: str, items: list[dict[str, Any]], status: str, metadata: dict[str, Any]
    ) -> dict[str, Any]:
        now = int(time.time())
        sub_id = self._id("sub")
        data = [
            {
                "id": self._id("si"),
                "object": "subscription_item",
                "price": self.public(self.get(i["price"], "price")),
                "current_period_start": now,
                "current_period_end": now + 30 * DAY,
            }
            for i in items
        ]
        subscription = {
            "id": sub_id,
            "object": "subscription",
            "customer": customer,
            "status": status,
            "metadata": metadata,
            "items": _list(data, f"/v1/subscription_items?subscription={sub_id}"),
            "latest_invoice": None,
            "cancel_at_period_end": False,
            "created": now,
        }
        self.objects[sub_id] = subscription
        return subscription

    # --- routes --------------------------------------------------------------------------------------
    def route(self, method: str, path: str, params: dict[str, Any]) -> dict[str, Any]:
        for pattern, verb, handler in self.routes():
            match = re.fullmatch(pattern, path)
            if match and verb == method:
                return handler(params, *match.groups())
        raise StripeError(404, f"Unrecognized request URL ({method}: {path}).")

    def routes(self) -> list[tuple[str, str, Callable[..., dict[str, Any]]]]:
        return [
            (r"/v1/customers", "POST", self.customers_create),
            (r"/v1/customers/([^/]+)", "GET", lambda p, i: self.public(self.get(i, "customer"))),
            (r"/v1/products", "POST", self.products_create),
            (r"/v1/products/([^/]+)", "GET", lambda p, i: self.public(self.get(i, "product"))),
            (r"/v1/products/([^/]+)", "POST", self.products_update),
            (r"/v1/prices", "GET", self.prices_list),
            (r"/v1/prices", "POST", self.prices_create),
            (r"/v1/prices/([^/]+)", "POST", self.prices_update),
            (r"/v1/billing/meters", "GET", self.meters_list),
            (r"/v1/billing/meters", "POST", self.meters_create),
            (r"/v1/billing/meters/([^/]+)/event_summaries", "GET", self.meter_event_summaries),
            (r"/v1/billing/meter_events", "POST", self.meter_events_create),
            (r"/v1/checkout/sessions", "POST", self.checkout_create),
            (r"/v1/checkout/sessions", "GET", self.checkout_list),
            (r"/v1/checkout/sessions/([^/]+)/expire", "POST", self.checkout_expire),
            (r"/v1/billing_portal/sessions", "POST", self.portal_create),
            (r"/v1/subscriptions/([^/]+)", "GET", lambda p, i: self.public(self.get(i, "subscription"))),
            (r"/v1/invoices", "GET", self.invoices_list),
            (r"/v1/invoices/create_preview", "POST", self.invoices_preview),
            (r"/v1/invoices/([^/]+)", "GET", lambda p, i: self.public(self.get(i, "invoice"))),
        ]

    def customers_create(self, p: dict[str, Any]) -> dict[str, Any]:
        customer = {
            "id": self._id("cus"),
            "object": "customer",
            "email": p.get("email"),
            "name": p.get("name"),
            "metadata": p.get("metadata", {}),
            "created": int(time.time()),
            "livemode": False,
        }
        self.objects[customer["id"]] = customer
        return customer

    def products_create(self, p: dict[str, Any]) -> dict[str, Any]:
        product_id = p.get("id") or self._id("prod")
        if product_id in self.objects:
            raise StripeError(400, f"Product already exists: {product_id}", "resource_already_exists", "id")
        product = {
            "id": product_id,
            "object": "product",
            "name": p["name"],
            "active": True,
            "metadata": p.get("metadata", {}),
        }
        self.objects[product_id] = product
        return product

    def products_update(self, p: dict[str, Any], product_id: str) -> dict[str, Any]:
        product = self.get(product_id, "product")
        product.update({k: v for k, v in p.items() if k in ("name", "metadata")})
        return self.public(product)

    def _prices(self) -> list[dict[str, Any]]:
        return [o for o in self.objects.values() if o["object"] == "price"]

    def prices_list(self, p: dict[str, Any]) -> dict[str, Any]:
        keys = set(p.get("lookup_keys", []))
        data = [self.public(o) for o in self._prices() if not keys or o.get("lookup_key") in keys]
        return _list(data, "/v1/prices")

    def prices_create(self, p: dict[str, Any]) -> dict[str, Any]:
        lookup_key = p.get("lookup_key")
        for other in self._prices():
            if lookup_key and other.get("lookup_key") == lookup_key:
                if p.get("transfer_lookup_key") != "true":
                    raise StripeError(400, "A price with this lookup key exists.", "lookup_key_exists", "lookup_key")
                other["lookup_key"] = None
        self.get(p["product"], "product")
        recurring = p.get("recurring", {})
        if recurring.get("meter"):
            self.get(recurring["meter"], "billing.meter")
        price = {
            "id": self._id("price"),
            "object": "price",
            "product": p["product"],
            "currency": p["currency"],
            "unit_amount_decimal": str(Decimal(p["unit_amount_decimal"])),
            "lookup_key": lookup_key,
            "active": True,
            "metadata": p.get("metadata", {}),
            "recurring": {
                "interval": recurring.get("interval"),
                "usage_type": recurring.get("usage_type"),
                "meter": recurring.get("meter"),
            },
        }
        self.objects[price["id"]] = price
        return price

    def prices_update(self, p: dict[str, Any], price_id: str) -> dict[str, Any]:
        price = self.get(price_id, "price")
        if "active" in p:
            price["active"] = p["active"] == "true"
        price.update({k: v for k, v in p.items() if k == "metadata"})
        return self.public(price)

    def _meters(self) -> list[dict[str, Any]]:
        return [o for o in self.objects.values() if o["object"] == "billing.meter"]

    def meters_list(self, p: dict[str, Any]) -> dict[str, Any]:
        return _list([self.public(m) for m in self._meters()], "/v1/billing/meters")

    def meters_create(self, p: dict[str, Any]) -> dict[str, Any]:
        if any(m["event_name"] == p["event_name"] for m in self._meters()):
            raise StripeError(400, "A meter with this event_name exists.", "resource_already_exists", "event_name")
        meter = {
            "id": self._id("mtr"),
            "object": "billing.meter",
            "display_name": p["display_name"],
            "event_name": p["event_name"],
            "status": "active",
            "default_aggregation": p.get("default_aggregation", {"formula": "sum"}),
            "customer_mapping": p.get("customer_mapping", {}),
            "value_settings": p.get("value_settings", {}),
        }
        self.objects[meter["id"]] = meter
        return meter

    def meter_events_create(self, p: dict[str, Any]) -> dict[str, Any]:
        now = int(time.time())
        timestamp = int(p.get("timestamp") or now)
        if timestamp < now - 35 * DAY:
            raise StripeError(
                400, "Timestamp is more than 35 days in the past.", "timestamp_too_far_in_past", "timestamp"
            )
        if timestamp > now + 300:
            raise StripeError(
                400, "Timestamp is more than 5 minutes in the future.", "timestamp_in_future", "timestamp"
            )
        if not any(m["event_name"] == p["event_name"] for m in self._meters()):
            raise StripeError(400, f"No meter for event_name {p['event_name']}.", "resource_missing", "event_name")
        payload = p.get("payload", {})
        self.get(payload.get("stripe_customer_id", ""), "customer")
        int(payload["value"])
        identifier = p.get("identifier") or self._id("ident")
        if any(e["identifier"] == identifier for e in self.meter_events):
            raise StripeError(
                400, f"An event with identifier {identifier} already exists.", "resource_already_exists", "identifier"
            )
        event = {
            "object": "billing.meter_event",
            "event_name": p["event_name"],
            "identifier": identifier,
            "payload": payload,
            "timestamp": timestamp,
            "created": now,
            "livemode": False,
        }
        self.meter_events.append(event)
        return event

    def meter_event_summaries(self, p: dict[str, Any], meter_id: str) -> dict[str, Any]:
        meter = self.get(meter_id, "billing.meter")
        self.get(p.get("customer", ""), "customer")
        start, end = int(p["start_time"]), int(p["end_time"])
        window = DAY if p.get("value_grouping_window") == "day" else end - start
        data = []
        for bucket in range(start, end, window):
            value = sum(
                int(e["payload"]["value"])
                for e in self.meter_events
                if e["event_name"] == meter["event_name"]
                and e["payload"]["stripe_customer_id"] == p["customer"]
                and bucket <= e["timestamp"] < min(bucket + window, end)
            )
            data.append(
                {
                    "id": f"mtrusg_{meter_id}_{bucket}",
                    "object": "billing.meter_event_summary",
                    "meter": meter_id,
                    "aggregated_value": value,
                    "start_time": bucket,
                    "end_time": min(bucket + window, end),
                }
            )
        if p.get("starting_after"):  # pages as Stripe's lists do: `limit` (default 10), then `starting_after`
            ids = [d["id"] for d in data]
            data = data[ids.index(p["starting_after"]) + 1 :]
        limit = int(p.get("limit", 10))
        return {**_list(data[:limit], f"/v1/billing/meters/{meter_id}/event_summaries"), "has_more": len(data) > limit}

    def url_params(self, p: dict[str, Any], *names: str) -> None:
        """Stripe takes http(s) URLs only: 400 url_invalid with the param otherwise."""
        for name in names:
            if name in p and urlsplit(p[name]).scheme not in ("http", "https"):
                raise StripeError(400, "Not a valid URL", "url_invalid", name)

    def checkout_create(self, p: dict[str, Any]) -> dict[str, Any]:
        self.url_params(p, "success_url", "cancel_url")
        self.customer_param(p)
        session_id = self._id("cs_test")
        session = {
            "id": session_id,
            "object": "checkout.session",
            "mode": p["mode"],
            "customer": p["customer"],
            "client_reference_id": p.get("client_reference_id"),
            "status": "open",
            "subscription": None,
            "url": f"{self.url}/c/pay/{session_id}",
            "success_url": p.get("success_url"),
            "cancel_url": p.get("cancel_url"),
            "metadata": p.get("metadata", {}),
            "_line_items": p.get("line_items", []),
            "_subscription_metadata": p.get("subscription_data", {}).get("metadata", {}),
        }
        self.objects[session_id] = session
        return self.public(session)

    def checkout_list(self, p: dict[str, Any]) -> dict[str, Any]:
        self.customer_param(p)
        data = [
            self.public(o)
            for o in self.objects.values()
            if o["object"] == "checkout.session"
            and o["customer"] == p["customer"]
            and p.get("status") in (None, o["status"])
        ]
        return _list(data[::-1], "/v1/checkout/sessions")

    def checkout_expire(self, p: dict[str, Any], session_id: str) -> dict[str, Any]:
        session = self.get(session_id, "checkout.session")
        if session["status"] != "open":
            raise StripeError(400, f"This Checkout Session is {session['status']}: only open ones can be expired.")
        session.update(status="expired", url=None)
        return self.public(session)

    def portal_create(self, p: dict[str, Any]) -> dict[str, Any]:
        self.url_params(p, "return_url")
        self.customer_param(p)
        session_id = self._id("bps")
        session = {
            "id": session_id,
            "object": "billing_portal.session",
            "customer": p["customer"],
            "return_url": p.get("return_url"),
            "url": f"{self.url}/p/session/{session_id}",
        }
        self.objects[session_id] = session
        return session

    def invoices_list(self, p: dict[str, Any]) -> dict[str, Any]:
        self.customer_param(p)
        data = [
            self.public(o)
            for o in self.objects.values()
            if o["object"] == "invoice" and o["customer"] == p.get("customer")
        ]
        data.sort(key=lambda i: (i["created"], i["id"]), reverse=True)
        if p.get("starting_after"):
            ids = [i["id"] for i in data]
            if p["starting_after"] not in ids:
                raise StripeError(
                    400, f"No such invoice: '{p['starting_after']}'", "resource_missing", "starting_after"
                )
            data = data[ids.index(p["starting_after"]) + 1 :]
        limit = int(p.get("limit", 10))
        return {**_list(data[:limit], "/v1/invoices"), "has_more": len(data) > limit}

    def invoices_preview(self, p: dict[str, Any]) -> dict[str, Any]:
        customer = self.customer_param(p)
        subscriptions = [
            o
            for o in self.objects.values()
            if o["object"] == "subscription" and o["customer"] == customer and o["status"] != "canceled"
        ]
        if not subscriptions:
            raise StripeError(400, "No upcoming invoices for customer.", "invoice_upcoming_none")
        lines, total = [], Decimal(0)
        for item in subscriptions[0]["items"]["data"]:
            price = item["price"]
            meter = self.objects[price["recurring"]["meter"]]
            quantity = self.total(customer, meter["event_name"])
            amount = (Decimal(price["unit_amount_decimal"]) * quantity).quantize(Decimal(1))
            total += amount
            lines.append(
                {
                    "object": "line_item",
                    "amount": int(amount),
                    "quantity": quantity,
                    "description": meter["display_name"],
                    "pricing": {"price_details": {"price": price["id"]}},
                }
            )
        now = int(time.time())
        return {
            "id": None,
            "object": "invoice",
            "customer": customer,
            "status": "draft",
            "currency": "usd",
            "amount_due": int(total),
            "amount_paid": 0,
            "created": now,
            "period_start": now - 30 * DAY,
            "period_end": now,
            "number": None,
            "hosted_invoice_url": None,
            "invoice_pdf": None,
            "lines": _list(lines, "/v1/invoices/upcoming/lines"),
        }


class _Handler(BaseHTTPRequestHandler):
    stripe: StripeServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def _handle(self, method: str) -> None:
        split = urlsplit(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
        params = nest(parse_qsl(split.query if method == "GET" else body, keep_blank_values=True))
        server = self.stripe
        if not (self.headers.get("Authorization") or "").startswith("Bearer sk_test_"):
            return self._send(401, {"error": {"type": "invalid_request_error", "message": "Invalid API Key."}})
        idem = self.headers.get("Idempotency-Key")
        if method == "POST" and idem and (split.path, idem) in server.idempotent:
            status, payload = server.idempotent[(split.path, idem)]
            return self._send(status, json.loads(payload), replayed=True)
        if split.path == "/v1/billing/meter_events" and not self._meter_event_gate():
            return None
        try:
            with server.lock:
                server.requests.append((method, split.path))
                status, result = 200, server.route(method, split.path, params)
        except StripeError as exc:
            status, result = (
                exc.status,
                {
                    "error": {
                        "type": "invalid_request_error",
                        "message": exc.message,
                        "code": exc.code or None,
                        "param": exc.param or None,
                    }
                },
            )
        except (KeyError, ValueError) as exc:
            status, result = 400, {"error": {"type": "invalid_request_error", "message": f"Bad parameter: {exc}"}}
        if method == "POST" and idem and status < 500:
            server.idempotent[(split.path, idem)] = (status, json.dumps(result).encode())
        if split.path == "/v1/billing/meter_events" and server.hold_mode == "after_accept":
            server.arrived.set()
            server.released.wait(30)
            self.close_connection = True
            return None  # accepted, but the caller never hears back
        return self._send(status, result)

    def _meter_event_gate(self) -> bool:
        server = self.stripe
        if server.hold_mode == "before_accept":
            server.arrived.set()
            server.released.wait(30)
            self.close_connection = True
            return False
        if server.fail_meter_events > 0:
            server.fail_meter_events -= 1
            self._send(500, {"error": {"type": "api_error", "message": "Temporary failure."}})
            return False
        return True

    def _send(self, status: int, payload: dict[str, Any], replayed: bool = False) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Request-Id", "req_" + uuid.uuid4().hex[:14])
        if replayed:
            self.send_header("Idempotent-Replayed", "true")
        self.end_headers()
        self.wfile.write(data)
