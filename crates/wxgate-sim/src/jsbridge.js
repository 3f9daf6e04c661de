// A stand-in for WeChat's WeixinJSBridge, for test browsers. Served by the simulator at
// /sim/jsbridge.js; the simulator writes its own origin below.
(function () {
  var sim = '__SIM_ORIGIN__';
  var outcome = (window.WXGATE_SIM_OUTCOME || 'pay');
  window.WeixinJSBridge = {
    invoke: function (name, params, callback) {
      if (name === 'requestMerchantTransfer') {
        // The payee confirms (or, with WXGATE_SIM_OUTCOME = 'cancel', declines) the transfer.
        fetch(sim + '/sim/payee/confirm', {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({
            package_info: params.package,
            outcome: outcome === 'cancel' ? 'decline' : 'confirm',
          }),
        }).then(function (r) {
          callback({ err_msg: 'requestMerchantTransfer:' + (r.ok ? 'ok' : 'fail') });
        }, function () {
          callback({ err_msg: 'requestMerchantTransfer:fail' });
        });
        return;
      }
      if (name !== 'getBrandWCPayRequest') {
        callback({ err_msg: name + ':fail' });
        return;
      }
      fetch(sim + '/sim/payer/pay', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ jsapi: params, outcome: outcome }),
      }).then(function (r) {
        var result = !r.ok ? 'fail' : outcome === 'cancel' ? 'cancel' : 'ok';
        callback({ err_msg: 'get_brand_wcpay_request:' + result });
      }, function () {
        callback({ err_msg: 'get_brand_wcpay_request:fail' });
      });
    },
  };
  var ready = function () { document.dispatchEvent(new Event('WeixinJSBridgeReady')); };
  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', ready);
  } else {
    ready();
  }
})();
