"""The portal's routes, one module per area, each with an ``APIRouter`` named ``router``.

``portal.app.ROUTE_MODULES`` lists the modules the application includes; every route must be
named and have an audience in ``portal.access.ROUTE_AUDIENCE`` (closed by default).
"""
