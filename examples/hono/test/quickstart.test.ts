import { describeQuickstart } from '../../express/test/quickstart-scenario.js';

describeQuickstart('hono');
