"""The API docs page (/api/v1/docs): Swagger UI from static/vendor/swagger-ui/, never a CDN.

django-ninja renders its own template only when "ninja" is an installed app and otherwise
falls back to one that loads Swagger UI from cdn.jsdelivr.net; this page uses neither. It runs
under the Content Security Policy: no inline script (the settings travel as a JSON data block,
static/js/api-docs.js starts Swagger UI).
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from ninja.openapi.docs import Swagger, _csrf_needed


class VendoredSwagger(Swagger):
    template = "api/docs.html"
    default_settings = {
        "layout": "BaseLayout",
        "deepLinking": True,
        "validatorUrl": None,  # else Swagger UI asks validator.swagger.io about the schema
    }

    def render_page(self, request: HttpRequest, api, **kwargs: Any) -> HttpResponse:
        swagger_settings = {**self.settings, "url": self.get_openapi_url(api, kwargs)}
        context = {"swagger_settings": swagger_settings, "api": api, "add_csrf": _csrf_needed(api)}
        return render(request, self.template, context)
