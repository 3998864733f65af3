"""The service's routes, one ``APIRouter`` per resource; :func:`behaviorlm.serving.app.create_app` includes
them. Each builder adds only the routes its configuration supports (a model, an intent model, a language
model, report files), so the OpenAPI schema lists what this deployment answers."""
