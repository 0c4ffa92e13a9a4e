// The login page's wait: asks the server (POST /login) whether the phone has approved this
// page's QR code, and moves on by itself once it has. Without this script, the page's button
// does the same in one step.
"use strict";

(function () {
  const login = document.getElementById("login");
  const status = document.getElementById("login-status");
  if (!login) {
    return;
  }
  const next = login.dataset.next || "/admin";
  // Marks the page as waiting by itself (the button stays, for a page without this script).
  login.dataset.waiting = "yes";

  async function wait() {
    for (;;) {
      let answer;
      try {
        const response = await fetch("/login", {
          method: "POST",
          credentials: "same-origin",
          headers: {
            "Accept": "application/json",
            "Content-Type": "application/x-www-form-urlencoded",
          },
          body: "next=" + encodeURIComponent(next),
        });
        answer = await response.json();
      } catch (error) {
        status.textContent = "Connection lost; trying again…";
        await new Promise((resolve) => setTimeout(resolve, 2000));
        continue;
      }
      if (answer.status === "approved") {
        status.textContent = "Approved. Signing you in…";
        window.location.assign(answer.next || next);
        return;
      }
      if (answer.status === "expired" || answer.status === "withdrawn") {
        window.location.assign(
          "/login?" + answer.status + "=1&next=" + encodeURIComponent(next),
        );
        return;
      }
      status.textContent = "Waiting for your approval…";
    }
  }

  wait();
})();
