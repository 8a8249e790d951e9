"""`GET /v1/models`: the model this gateway serves, as OpenAI lists models."""

from __future__ import annotations

from fastapi import APIRouter

from services.gateway.bounds import BoundedRoute
from services.gateway.deps import GatewayDep, TenantDep

router = APIRouter(route_class=BoundedRoute)


def model_object(name: str) -> dict:
    return {"id": name, "object": "model", "created": 0, "owned_by": "deepseek-v4-platform"}


@router.get("/models")
async def list_models(gw: GatewayDep, _: TenantDep) -> dict:
    return {"object": "list", "data": [model_object(gw.model_name)]}


@router.get("/models/{model_id:path}")
async def get_model(model_id: str, gw: GatewayDep, _: TenantDep) -> dict:
    gw.check_model(model_id)
    return model_object(model_id)
