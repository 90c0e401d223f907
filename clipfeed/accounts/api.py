from __future__ import annotations

from fastapi import APIRouter, Request, Response

from clipfeed.accounts import service
from clipfeed.accounts.schemas import AuthOut, LoginRequest, RegisterRequest, UserOut
from clipfeed.deps import SESSION_COOKIE, CurrentUser, Session, Settings, request_token

router = APIRouter(prefix="/api/v1", tags=["accounts"])


def _set_cookie(response: Response, settings, token: str) -> None:
    response.set_cookie(SESSION_COOKIE, token, max_age=settings.session_ttl_days * 86400, httponly=True,
                        samesite="lax", secure=settings.cookie_secure, path="/")


@router.post("/auth/register", status_code=201, response_model=AuthOut)
async def register(body: RegisterRequest, response: Response, session: Session, settings: Settings):
    user, token = await service.register(session, settings, handle=body.handle, password=body.password,
                                         display_name=body.display_name, birth_date=body.birth_date,
                                         interests=body.interests)
    _set_cookie(response, settings, token)
    return {"user": user, "token": token}


@router.post("/auth/login", response_model=AuthOut)
async def login(body: LoginRequest, request: Request, response: Response, session: Session, settings: Settings):
    client_ip = request.client.host if request.client else "unknown"
    user, token = await service.login(session, settings, handle=body.handle, password=body.password,
                                      client_ip=client_ip)
    _set_cookie(response, settings, token)
    return {"user": user, "token": token}


@router.post("/auth/logout", status_code=204)
async def logout(request: Request, session: Session):
    token = request_token(request)
    if token:
        await service.logout(session, token)
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/me", response_model=UserOut)
async def me(user: CurrentUser):
    return user
