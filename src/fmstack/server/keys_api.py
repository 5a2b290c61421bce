"""API keys over HTTP, for admins (the `admin` scope, `server.auth`): list, create, revoke, rotate — what
`fmstack keys` does, for a server managed from elsewhere. A secret appears once, in the answer that made it.

Only with an admin key: while no key exists, anyone who can connect could make the first one and lock the operator
out, so the first key is made on the server's machine, with `fmstack keys create`."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from fmstack.core.errors import FmstackError
from fmstack.core.keys import KeyStore
from fmstack.server.deps import LARGEST_INT, gateway_of


class NoAdminKey(FmstackError):
    status = 403
    type = "permission_error"


def _admin_key(request: Request) -> None:
    """`server.auth` has checked the key's scope; without a key, authentication is off and nobody is an admin."""
    if getattr(request.state, "api_key", None) is None:
        raise NoAdminKey(
            "Keys are managed over HTTP with an admin key only. Make the first key on the server's machine: "
            "fmstack keys create --name admin --scope admin",
            code="admin_key_required",
        )


router = APIRouter(prefix="/v1/keys", tags=["API keys"], dependencies=[Depends(_admin_key)])


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="recorded on every trace of the key (never the key)")
    app: str | None = Field(None, description="the app its calls are traced under (default: the name)")
    scopes: list[str] = Field(["inference"], description="inference, feedback, admin")
    rpm: int | None = Field(None, le=LARGEST_INT, description="model requests per minute")
    tpm: int | None = Field(None, le=LARGEST_INT, description="tokens (prompt + completion) per minute")
    budget: str | None = Field(None, description="USD per calendar day or month (UTC): 5/day, 100/month")


def _keys(request: Request) -> KeyStore:
    return KeyStore(gateway_of(request).sessions)


@router.get("")
async def list_keys(request: Request) -> dict:
    """Every key, revoked ones included: name, app, scopes, limits, budget, status; never a secret."""
    keys = await asyncio.to_thread(_keys(request).list)
    return {"object": "list", "data": [k.to_dict() for k in keys]}


@router.post("", status_code=201)
async def create_key(body: KeyCreate, request: Request) -> dict:
    """A new key; its `secret` is in this answer only."""
    keys = _keys(request)
    new = await asyncio.to_thread(keys.create, body.name, body.app, body.scopes, body.rpm, body.tpm, body.budget)
    return new.to_dict()


@router.post("/{name}/revoke")
async def revoke_key(name: str, request: Request) -> dict:
    return (await asyncio.to_thread(_keys(request).revoke, name)).to_dict()


@router.post("/{name}/rotate")
async def rotate_key(name: str, request: Request) -> dict:
    """A new secret for the key, in this answer only; the old one stops working at once."""
    return (await asyncio.to_thread(_keys(request).rotate, name)).to_dict()
