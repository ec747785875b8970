from fastapi import Depends, FastAPI

from siot_authz import AuthSettings, CognitoAuth, Principal

# A function, not settings: it is called at start-up, so importing this module (and collecting
# its tests) needs no config file, and tests can swap the pool before it is ever read.
auth = CognitoAuth(lambda: AuthSettings.from_simpleiot_config("~/.simpleiot/myteam/config.json"))
app = FastAPI(lifespan=auth.lifespan)  # read settings and prefetch keys at start, close at stop


@app.get("/v1/me")
async def me(principal: Principal = Depends(auth)) -> dict:
    return {"status": "ok", "user": principal.username, "groups": principal.groups}


@app.delete("/v1/project")
def delete_project(name: str, principal: Principal = Depends(auth.require_groups("admin"))) -> dict:
    return {"status": "ok"}  # sync routes work too; the check runs on the event loop
