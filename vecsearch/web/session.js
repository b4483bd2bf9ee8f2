// Signing in to a server started with a token: on a 401 the page asks for the token, trades it for the
// server's HttpOnly session cookie (POST /api/v1/session), and that cookie then carries every request,
// thumbnails included. The token itself is never stored by the page.
"use strict";

const SESSION_URL = "/api/v1/session";
let signingIn = null; // the sign-in under way: every request refused meanwhile waits for the same one

/** The server's one-line message of an answer, or its status. */
async function messageOf(response) {
  try {
    const data = await response.json();
    if (data && typeof data.error === "string") return data.error;
  } catch (_) {
    // not JSON
  }
  return `${response.status} ${response.statusText}`;
}

/** Resolves once the user has signed in; rejects if they cancel. `reason` is the server's 401 message. */
function signIn(reason) {
  if (!signingIn) {
    signingIn = new Promise((resolve, reject) => askForToken(reason, resolve, reject));
    signingIn.then(() => { signingIn = null; }, () => { signingIn = null; });
  }
  return signingIn;
}

function askForToken(reason, resolve, reject) {
  const dialog = document.querySelector("#token-dialog");
  const form = document.querySelector("#token-form");
  const input = document.querySelector("#token-input");
  const error = document.querySelector("#token-error");
  const cancel = document.querySelector("#token-cancel");
  let attempts = 0;
  document.querySelector("#token-detail").textContent = reason; // the server's words: why it asks
  error.hidden = true;
  error.textContent = "";
  input.value = "";

  const finish = (ok) => {
    form.removeEventListener("submit", submit);
    cancel.removeEventListener("click", dismiss);
    dialog.removeEventListener("cancel", dismiss);
    if (dialog.open) dialog.close();
    if (ok) resolve();
    else reject(new ApiError("this server needs its access token: reload the page to sign in"));
  };
  const dismiss = (event) => {
    event.preventDefault();
    finish(false);
  };
  async function submit(event) {
    event.preventDefault();
    const token = input.value.trim();
    if (!token) return;
    form.setAttribute("aria-busy", "true");
    let response = null;
    let failure;
    try {
      response = await fetch(SESSION_URL, {
        method: "POST",
        headers: { Authorization: `Bearer ${token}`, Accept: "application/json" },
      });
    } catch (err) {
      failure = `cannot reach the server (${err.message})`;
    }
    form.removeAttribute("aria-busy");
    if (response && response.ok) {
      finish(true);
      return;
    }
    // A wrong token (401) or too many of them (429): the server's words, and another try.
    attempts += 1;
    error.textContent = failure || await messageOf(response);
    error.dataset.attempts = String(attempts);
    error.hidden = false;
    input.select();
  }
  form.addEventListener("submit", submit);
  cancel.addEventListener("click", dismiss);
  dialog.addEventListener("cancel", dismiss); // Escape
  if (!dialog.open) dialog.showModal();
  input.focus();
}
