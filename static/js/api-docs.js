// Starts Swagger UI on /api/v1/docs (templates/api/docs.html) from the vendored bundle.
(function () {
  "use strict";
  var config = JSON.parse(document.getElementById("swagger-settings").textContent);
  config.dom_id = "#swagger-ui";
  config.presets = [window.SwaggerUIBundle.presets.apis];
  var csrf = document.body.getAttribute("data-csrf-token");
  if (csrf) {
    config.requestInterceptor = function (req) { req.headers["X-CSRFToken"] = csrf; return req; };
  }
  window.ui = window.SwaggerUIBundle(config);
})();
