// The enrolment code is in the URL's fragment, which browsers never send.
"use strict";
const code = decodeURIComponent(location.hash.slice(1));
const result = document.getElementById("result");
document.getElementById("enrol").addEventListener("submit", async (event) => {
  event.preventDefault();
  const password = document.getElementById("password").value;
  const response = await fetch("/api/v1/enrol", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ code, password }),
  });
  const body = await response.json();
  result.textContent = "";
  if (!response.ok) {
    result.textContent = body.detail || "enrolment failed";
    return;
  }
  history.replaceState(null, "", location.pathname);
  const line = document.createElement("p");
  line.textContent = `${body.user} (${body.role}) is enrolled. Sign in with POST /api/v1/session.`;
  result.append(line);
  if (body.otpauth_uri) {
    const uri = document.createElement("code");
    uri.textContent = body.otpauth_uri;
    result.append("Add this to your authenticator app now: ", uri);
  }
});
