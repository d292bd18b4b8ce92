import { describeQuickstart } from '../../express/test/quickstart-scenario.js';

// Port 4100: the Express example's test, running in parallel, has 4000.
describeQuickstart('hono', 4100);
