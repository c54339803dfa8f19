// Passkeys on grantd's pages: adding one on the account page, signing in with one on the
// sign-in page (a button, and the browser's own suggestion in the email field), and using one
// as the second step after a password. The server sends WebAuthn options as JSON (binary
// values base64url) and takes the browser's answer back the same way, in a form with the page's
// csrf_token.
"use strict";
(function () {
  function fromB64url(text) {
    var b64 = text.replace(/-/g, "+").replace(/_/g, "/");
    while (b64.length % 4) b64 += "=";
    var bin = atob(b64), bytes = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    return bytes.buffer;
  }
  function toB64url(buffer) {
    var bytes = new Uint8Array(buffer), bin = "";
    for (var i = 0; i < bytes.length; i++) bin += String.fromCharCode(bytes[i]);
    return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }
  function descriptors(list) {
    return (list || []).map(function (d) { return Object.assign({}, d, { id: fromB64url(d.id) }); });
  }
  function creationOptions(o) {
    o.challenge = fromB64url(o.challenge);
    o.user.id = fromB64url(o.user.id);
    o.excludeCredentials = descriptors(o.excludeCredentials);
    return o;
  }
  function requestOptions(o) {
    o.challenge = fromB64url(o.challenge);
    o.allowCredentials = descriptors(o.allowCredentials);
    return o;
  }
  function credentialJSON(c) {
    var r = c.response, response = { clientDataJSON: toB64url(r.clientDataJSON) };
    if (r.attestationObject) {
      response.attestationObject = toB64url(r.attestationObject);
      response.transports = r.getTransports ? r.getTransports() : [];
    } else {
      response.authenticatorData = toB64url(r.authenticatorData);
      response.signature = toB64url(r.signature);
      if (r.userHandle) response.userHandle = toB64url(r.userHandle);
    }
    return JSON.stringify({
      id: c.id, rawId: toB64url(c.rawId), type: c.type, response: response,
      clientExtensionResults: c.getClientExtensionResults(),
      authenticatorAttachment: c.authenticatorAttachment || undefined
    });
  }
  function post(url, fields) {
    var body = new URLSearchParams(fields);
    return fetch(url, { method: "POST", body: body, credentials: "same-origin" }).then(function (response) {
      return response.json().then(function (json) {
        if (!response.ok) throw new Error(json.error || "The request failed.");
        return json;
      });
    });
  }
  function say(element, text) {
    if (!element) return;
    element.textContent = text;
    element.hidden = !text;
  }
  var supported = !!(window.PublicKeyCredential && navigator.credentials);

  // The account page: add a passkey.
  var add = document.getElementById("passkey-add");
  if (add) {
    if (supported) add.hidden = false;
    else say(document.getElementById("passkey-unsupported"), "This browser cannot create passkeys.");
    add.addEventListener("submit", function (event) {
      event.preventDefault();
      var status = document.getElementById("passkey-status"), csrf = add.elements.csrf_token.value;
      say(status, "");
      post("/account/passkeys/options", { csrf_token: csrf })
        .then(function (options) { return navigator.credentials.create({ publicKey: creationOptions(options) }); })
        .then(function (credential) {
          return post("/account/passkeys", { csrf_token: csrf, name: add.elements.name.value, credential: credentialJSON(credential) });
        })
        .then(function (done) { window.location.assign(done.redirect); })
        .catch(function (error) {
          say(status, error.name === "NotAllowedError" ? "No passkey was created." : error.message);
        });
    });
  }

  // The second step after a password: the page carries the request's options (for this
  // person's passkeys, bound to this sign-in); the answer is posted with the step's form.
  var step = document.getElementById("passkey-second-step");
  if (step) {
    if (supported) step.hidden = false;
    else say(document.getElementById("passkey-unsupported"), "This browser cannot use passkeys.");
    step.addEventListener("submit", function (event) {
      event.preventDefault();
      var status = document.getElementById("passkey-status");
      say(status, "");
      Promise.resolve()
        .then(function () { return navigator.credentials.get({ publicKey: requestOptions(JSON.parse(step.dataset.options)) }); })
        .then(function (credential) {
          step.elements.credential.value = credentialJSON(credential);
          step.submit();
        })
        .catch(function (error) {
          say(status, error.name === "NotAllowedError" ? "No passkey was used." : error.message);
        });
    });
  }

  // The sign-in page: a button, and the browser's suggestions in the email field.
  var signin = document.querySelector("form[action=\"/signin\"]"), button = document.getElementById("passkey-signin");
  if (signin && button && supported) {
    var status = document.getElementById("passkey-status"), pending = null;
    var fields = function () { return { csrf_token: signin.elements.csrf_token.value, next: signin.elements.next.value }; };
    var ask = function (mediation) {
      if (pending) pending.abort();
      var controller = new AbortController();
      pending = controller;
      return post("/passkeys/signin/options", { csrf_token: fields().csrf_token })
        .then(function (options) {
          var request = { publicKey: requestOptions(options), signal: controller.signal };
          if (mediation) request.mediation = mediation;
          return navigator.credentials.get(request);
        })
        .then(function (credential) {
          var sent = fields();
          sent.credential = credentialJSON(credential);
          return post("/passkeys/signin", sent);
        })
        .then(function (done) { window.location.assign(done.redirect); });
    };
    button.hidden = false;
    button.addEventListener("click", function () {
      say(status, "");
      ask(null).catch(function (error) {
        if (error.name !== "AbortError") say(status, error.name === "NotAllowedError" ? "No passkey was used." : error.message);
      });
    });
    if (PublicKeyCredential.isConditionalMediationAvailable) {
      PublicKeyCredential.isConditionalMediationAvailable().then(function (available) {
        // The browser's offer in the email field: a refusal from the server is said, the rest
        // (the person typed a password instead, the browser gave up) is not.
        if (available) ask("conditional").catch(function (error) {
          if (error.name === "Error") say(status, error.message);
        });
      });
    }
  }
})();
