/*
 * <cigw-build-button>: a build button for any web page.
 *
 *   <script src="https://cigw.example.com/ui/embed.js" defer></script>
 *   <cigw-build-button target="web-e2e" token="cigw_…" branch="main" params='{"suite":"smoke"}'>
 *   </cigw-build-button>
 *
 * Attributes: target (required), token (a button token: `cigw token create --button`), branch or
 * tag, sha, params (JSON object), label (button text), gateway (default: where this script came
 * from). It triggers the target, then follows the run it started through a watch link (the token
 * itself may only trigger) and shows its live state and a link. Events: `cigw-triggered`,
 * `cigw-state` and `cigw-error`, each with the details in `event.detail`.
 *
 * A classic script (not a module) so it loads on any page; the gateway answers it only for the
 * origins the token allows.
 */
(() => {
  'use strict';
  const scriptOrigin = document.currentScript ? new URL(document.currentScript.src).origin : location.origin;

  class CigwBuildButton extends HTMLElement {
    static get observedAttributes() { return ['target', 'label']; }

    connectedCallback() {
      if (!this.button) {
        this.button = document.createElement('button');
        this.button.type = 'button';
        this.button.setAttribute('part', 'button');
        this.button.addEventListener('click', () => this.build());
        this.status = document.createElement('span');
        this.status.setAttribute('part', 'state');
        this.status.setAttribute('role', 'status');
        this.status.setAttribute('aria-live', 'polite');
        this.link = document.createElement('a');
        this.link.setAttribute('part', 'link');
        this.link.target = '_blank';
        this.link.rel = 'noopener';
        this.link.hidden = true;
        this.link.textContent = 'Run details';
        this.append(this.button, ' ', this.status, ' ', this.link);
      }
      this.render();
    }

    disconnectedCallback() {
      this.source?.close();
    }

    attributeChangedCallback() {
      if (this.button) this.render();
    }

    render() {
      this.button.textContent = this.getAttribute('label') || `Build ${this.getAttribute('target') || ''}`.trim();
    }

    get gateway() {
      return (this.getAttribute('gateway') || scriptOrigin).replace(/\/+$/, '');
    }

    show(state, message) {
      this.dataset.state = state;
      this.status.textContent = message ? `${state}: ${message}` : state;
    }

    fail(message) {
      this.show('refused', message);
      this.button.disabled = false;
      this.dispatchEvent(new CustomEvent('cigw-error', { detail: { message }, bubbles: true }));
    }

    async post(path, body) {
      const response = await fetch(`${this.gateway}${path}`, {
        method: 'POST',
        mode: 'cors',
        credentials: 'omit',
        headers: { Authorization: `Bearer ${this.getAttribute('token') || ''}`, 'Content-Type': 'application/json' },
        body: JSON.stringify(body),
      });
      const data = await response.json().catch(() => ({}));
      if (!response.ok) throw new Error(data.message || `the gateway answered ${response.status}`);
      return data;
    }

    async build() {
      this.source?.close();
      this.link.hidden = true;
      this.button.disabled = true;
      this.show('sending');
      const body = { targets: [this.getAttribute('target')] };
      const ref = {};
      for (const key of ['branch', 'tag', 'sha']) if (this.getAttribute(key)) ref[key] = this.getAttribute(key);
      if (Object.keys(ref).length) body.ref = ref;
      try {
        if (this.getAttribute('params')) body.parameters = JSON.parse(this.getAttribute('params'));
      } catch {
        this.fail('the params attribute is not a JSON object');
        return;
      }
      let run;
      try {
        const accepted = await this.post('/v1/triggers', body);
        run = accepted.runs[0];
        this.dispatchEvent(new CustomEvent('cigw-triggered', { detail: accepted, bubbles: true }));
        this.show(run.state);
        this.link.href = `${this.gateway}/ui/#/runs/${encodeURIComponent(run.id)}`;
        this.link.hidden = false;
        const watch = await this.post('/ui/watch', { run_id: run.id });
        this.follow(`${this.gateway}${watch.url}`);
      } catch (error) {
        // A network error here is usually the browser refusing the gateway's CORS answer:
        // this page's origin is not among the token's allowed origins.
        const message = error instanceof TypeError ? 'this page may not use the gateway (origin not allowed)' : error.message;
        this.fail(message);
      }
    }

    follow(url) {
      this.source = new EventSource(url);
      this.source.onmessage = (message) => {
        const run = JSON.parse(message.data);
        this.show(run.state, run.finished ? run.message : null);
        if (run.provider_url) this.link.dataset.provider = run.provider_url;
        this.dispatchEvent(new CustomEvent('cigw-state', { detail: run, bubbles: true }));
        if (run.finished) {
          this.source.close();
          this.button.disabled = false;
        }
      };
      this.source.onerror = () => {
        if (this.source.readyState === EventSource.CLOSED) this.button.disabled = false;
      };
    }
  }

  if (!customElements.get('cigw-build-button')) customElements.define('cigw-build-button', CigwBuildButton);
})();
