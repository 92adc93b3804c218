package proxy

// ScheduleBatch is scheduleBatch, for the tests of package proxy_test.
var ScheduleBatch = scheduleBatch
